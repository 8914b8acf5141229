"""Configure logging: one line per event, JSON in production, with the task's context attached."""
from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import Any

from celery.signals import task_postrun, task_prerun
from flask import Flask, g, has_request_context
from pythonjsonlogger.json import JsonFormatter

# Per task (and per thread, should a thread pool run tasks): which task, run and source a line is about.
_task_context: ContextVar[dict[str, Any] | None] = ContextVar("kasparro_task_context", default=None)
# What a line is about, in the order the console prints it; JSON lines carry the same fields as keys.
CONTEXT_FIELDS = ("run_id", "source_run_id", "source", "stage", "task_id", "request_id")


def bind(**fields: Any) -> None:
    """Attach `fields` (run_id, source...) to every log line until the current task ends."""
    _task_context.set({**(_task_context.get() or {}), **fields})


class ContextFilter(logging.Filter):
    """Attach the current request id or task id to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context() and hasattr(g, "request_id"):
            record.request_id = g.request_id
        for key, value in (_task_context.get() or {}).items():
            setattr(record, key, value)
        return True


class ConsoleFormatter(logging.Formatter):
    """Format a line for people: the message, then the context it is about as key=value pairs."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        line = super().formatMessage(record)
        # Appended to the message, not the record, so a traceback still follows the whole line.
        context = " ".join(f"{key}={getattr(record, key)}" for key in CONTEXT_FIELDS
                           if getattr(record, key, None) is not None)
        return f"{line} [{context}]" if context else line


@task_prerun.connect
def _bind_task(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    _task_context.set({"task_id": task_id, "task_name": getattr(task, "name", None)})


@task_postrun.connect
def _clear_task(**_: Any) -> None:
    # Cleared so nothing leaks into the next task this process runs.
    _task_context.set({})


def init_app(app: Flask) -> None:
    """Send the root logger's records to stderr in the configured format."""
    handler = logging.StreamHandler(sys.stderr)
    if app.config["LOG_FORMAT"] == "json":
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                           rename_fields={"asctime": "time", "levelname": "level"}))
    else:
        handler.setFormatter(ConsoleFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not getattr(h, "_kasparro", False)]
    handler._kasparro = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(app.config["LOG_LEVEL"])
    # urllib3 logs full URLs at DEBUG; a key sent as a query parameter must never reach a log.
    logging.getLogger("urllib3").setLevel(max(logging.INFO, root.level))
