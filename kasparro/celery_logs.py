"""Celery's own output through our logging, so worker and beat lines look like every other process's.

Celery configures logging itself (plain-text handlers on the root, task and multiprocessing loggers) unless
something answers its `setup_logging` signal. We answer it, so the handler `kasparro.logs` put on the root
logger stays the only one and Celery's task loggers propagate to it.

With `LOG_FORMAT=json` three things Celery prints past logging become log lines instead: the worker's banner,
beat's banner (both facts are logged as one line each) and the worker's shutdown notices.
"""
from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import celery.apps.worker
from celery import Celery, current_app
from celery.apps.beat import Beat
from celery.apps.worker import Worker
from celery.signals import setup_logging
from celery.utils.log import MP_LOG, get_multiprocessing_logger

logger = logging.getLogger(__name__)


@setup_logging.connect
def _keep_our_handler(loglevel: int | str | None = None, **_: Any) -> None:
    # Sent by worker and beat as they start. --loglevel still sets the level, as Celery would have done.
    root = logging.getLogger()
    if loglevel:
        root.setLevel(loglevel)
    # billiard's logger does not propagate: it gets our handler, as Celery would have given it its own, and
    # Celery's level for it (errors only unless MP_LOG is set: its INFO lines are about every fork).
    pool = get_multiprocessing_logger()
    pool.handlers = [h for h in root.handlers if getattr(h, "_kasparro", False)]
    pool.setLevel(loglevel if loglevel and MP_LOG else logging.ERROR)
    # Celery would also have sent stray print()s and tracebacks on stdout/stderr through logging.
    if current_app.conf.worker_redirect_stdouts:
        current_app.log.redirect_stdouts(current_app.conf.worker_redirect_stdouts_level)


class JsonWorker(Worker):
    """`celery worker` whose banner is one log line (with fields) instead of text on stdout."""

    def emit_banner(self) -> None:
        queues = sorted(self.app.amqp.queues)
        tasks = sorted(name for name in self.app.tasks if not name.startswith("celery."))
        logger.info("%s starting: concurrency %s (%s), queues %s, %d tasks", self.hostname, self.concurrency,
                    _name(self.pool_cls), ", ".join(queues), len(tasks),
                    extra={"hostname": self.hostname, "concurrency": self.concurrency, "queues": queues,
                           "tasks": tasks, "broker": self.app.connection().as_uri()})


class JsonBeat(Beat):
    """`celery beat` that logs what its banner would have printed."""

    def __init__(self, *args: Any, quiet: bool = False, **kwargs: Any) -> None:  # noqa: ARG002
        super().__init__(*args, quiet=True, **kwargs)

    def setup_logging(self, colorize: bool | None = None) -> None:
        super().setup_logging(colorize)
        logger.info("beat starting: scheduler %s, schedule %s", _name(self.scheduler_cls), self.schedule,
                    extra={"scheduler": _name(self.scheduler_cls), "schedule": self.schedule,
                           "broker": self.app.connection().as_uri()})


def _name(thing: Any) -> str:
    return thing if isinstance(thing, str) else f"{thing.__module__}.{thing.__qualname__}"


def _say(msg: str, f: TextIO = sys.__stderr__) -> None:  # noqa: ARG001 - safe_say's signature
    # The worker prints "worker: Warm shutdown (MainProcess)" and the like straight to the terminal.
    logger.warning(msg.strip())


def init_app(celery_app: Celery, log_format: str) -> None:
    """In JSON mode, make `celery_app`'s worker and beat log their banners and notices instead of printing them."""
    if log_format != "json":
        return
    celery_app.Worker = celery_app.subclass_with_self(JsonWorker, reverse="Worker")
    celery_app.Beat = celery_app.subclass_with_self(JsonBeat, reverse="Beat")
    # Module-level in Celery and only read at shutdown: replaced for this process, which asked for JSON.
    celery.apps.worker.safe_say = _say
