"""Configure logging: one line per event, JSON in production, with the task's context attached."""
from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

from celery.signals import task_postrun, task_prerun
from flask import Flask, g, has_request_context

from kasparro import logformat

# Per task (and per thread, should a thread pool run tasks): which task, run and source a line is about.
_task_context: ContextVar[dict[str, Any] | None] = ContextVar("kasparro_task_context", default=None)


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


@task_prerun.connect
def _bind_task(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    _task_context.set({"task_id": task_id, "task_name": getattr(task, "name", None)})


@task_postrun.connect
def _clear_task(**_: Any) -> None:
    # Cleared so nothing leaks into the next task this process runs.
    _task_context.set({})


def init_app(app: Flask) -> None:
    """Send the root logger's records to stderr in the configured format, with the request's or task's context."""
    logformat.configure(app.config["LOG_FORMAT"], app.config["LOG_LEVEL"], filters=[ContextFilter()])
