"""Entry point for Celery processes: `celery -A kasparro.worker worker|beat|flower`."""
from __future__ import annotations

from typing import Any

from celery.signals import beat_init, celeryd_after_setup, worker_process_init, worker_shutdown

from kasparro import liveness, redis_store
from kasparro.boot import create_app_or_exit
from kasparro.db import db

# A malformed setting stops the worker, beat and Flower with one line, as it stops every other command.
flask_app = create_app_or_exit()
celery_app = flask_app.extensions["celery"]
app = celery_app


@worker_process_init.connect
def _fresh_pool(**_: Any) -> None:
    # A forked child must not share its parent's database connections.
    with flask_app.app_context():
        db.engine.dispose()


@celeryd_after_setup.connect
def _announce(sender: str, **_: Any) -> None:
    # In the main process, before the pool forks: every pool process inherits the identity,
    # and the liveness key stays fresh for as long as this process lives.
    with flask_app.app_context():
        ttl = flask_app.config["WORKER_LIVENESS_TTL_SECONDS"]
        flask_app.extensions["kasparro_liveness"] = liveness.start(redis_store.client(), sender, ttl)


@worker_shutdown.connect
def _retire(**_: Any) -> None:
    stop = flask_app.extensions.get("kasparro_liveness")
    if stop is not None:
        stop.set()


@beat_init.connect
def _first_run(**_: Any) -> None:
    # Run once at start-up instead of waiting a whole interval for the first tick.
    if flask_app.config["ETL_RUN_ON_START"]:
        celery_app.send_task("kasparro.tasks.scheduled_run", queue=flask_app.config["TASK_QUEUE"])
