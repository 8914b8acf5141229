"""How a log line looks, the same from every process: JSON (`LOG_FORMAT=json`) or a line for people.

The standard library and python-json-logger only, so processes that log before any app exists (gunicorn's
master, the fake upstream, the launcher of `make run`) use it as the API, worker, beat and Flower do.
A JSON line carries `time`, `level`, `name` (the logger), `message`, `process` (pid) and `process_name`, plus
whatever context a record holds (run_id, task_id...); `make run` adds `service` (api.1, worker.1...).
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

# What a line is about, in the order the console prints it; JSON lines carry the same fields as keys.
CONTEXT_FIELDS = ("run_id", "source_run_id", "source", "stage", "task_id", "request_id")
# Every JSON line has these keys, whichever process wrote it.
JSON_FIELDS = ("time", "level", "name", "message", "process", "process_name")
_JSON_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s %(process)d %(processName)s"
_RENAMED = {"asctime": "time", "levelname": "level", "processName": "process_name"}
_CONSOLE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# Alembic announces each of its plugins at INFO when imported: seven lines per process that say nothing.
_QUIET = {"alembic.runtime.plugins": logging.WARNING}


class ConsoleFormatter(logging.Formatter):
    """Format a line for people: the message, then the context it is about as key=value pairs."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        line = super().formatMessage(record)
        # Appended to the message, not the record, so a traceback still follows the whole line.
        context = " ".join(f"{key}={getattr(record, key)}" for key in CONTEXT_FIELDS
                           if getattr(record, key, None) is not None)
        return f"{line} [{context}]" if context else line


def wants_json(env: Mapping[str, str]) -> bool:
    """Return whether `env` (the environment, .env under it) asks for JSON lines."""
    return env.get("LOG_FORMAT", "console").strip().lower() == "json"


def formatter(log_format: str) -> logging.Formatter:
    """Return the formatter for `log_format` ("json", anything else is the console's)."""
    if log_format == "json":
        return JsonFormatter(_JSON_FORMAT, rename_fields=_RENAMED)
    return ConsoleFormatter(_CONSOLE_FORMAT)


def handler(log_format: str, stream: TextIO | None = None, filters: Iterable[logging.Filter] = ()) -> logging.Handler:
    """Return a handler writing `log_format` lines to `stream` (stderr), marked as ours."""
    made = logging.StreamHandler(stream or sys.stderr)
    made.setFormatter(formatter(log_format))
    for each in filters:
        made.addFilter(each)
    # The mark lets configure() replace an earlier handler of ours (gunicorn's master installed one
    # before the app's own init_app runs in its workers) instead of printing every line twice.
    made._kasparro = True  # type: ignore[attr-defined]
    return made


def configure(log_format: str, level: str | int, filters: Iterable[logging.Filter] = ()) -> None:
    """Send every record of this process (warnings included) to stderr in `log_format`, at `level`."""
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not getattr(h, "_kasparro", False)]
    root.addHandler(handler(log_format, filters=filters))
    root.setLevel(level)
    # `warnings.warn` would print plain text to stderr; through logging it is a line like any other.
    logging.captureWarnings(True)
    # urllib3 logs full URLs at DEBUG; a key sent as a query parameter must never reach a log.
    logging.getLogger("urllib3").setLevel(max(logging.INFO, root.level))
    for name, quiet in _QUIET.items():
        logging.getLogger(name).setLevel(max(quiet, root.level))


def gunicorn_logconfig(env: Mapping[str, str]) -> dict[str, Any]:
    """Return gunicorn's `logconfig_dict`: its error and access logs go through our handler on the root logger."""
    log_format = "json" if wants_json(env) else "console"
    level = env.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
    own = {"level": "INFO", "handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": level, "handlers": ["kasparro"]},
        "loggers": {"gunicorn.error": own, "gunicorn.access": dict(own),
                    # Set before the workers import the app, which is when alembic announces its plugins.
                    **{name: {"level": logging.getLevelName(quiet)} for name, quiet in _QUIET.items()}},
        "handlers": {"kasparro": {"()": handler, "log_format": log_format}},
        "formatters": {},
    }
