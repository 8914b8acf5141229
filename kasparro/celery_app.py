"""Bind Celery to the Flask app so every task runs inside an application context."""
from __future__ import annotations

from datetime import timedelta

from celery import Celery, Task
from flask import Flask


def init_app(app: Flask) -> Celery:
    """Create the Celery app from `celeryconfig` plus this app's settings and register it."""

    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery = Celery(app.import_name, task_cls=FlaskTask)
    celery.config_from_object("celeryconfig")
    queue = app.config["TASK_QUEUE"]
    celery.conf.update(
        broker_url=app.config["BROKER_URL"],
        result_backend=app.config["RESULT_BACKEND"],
        task_default_queue=queue,
        # Beat leaves a heartbeat in Redis so /health can tell scheduling is alive.
        beat_scheduler="kasparro.beat:HeartbeatScheduler",
        kasparro_redis_url=app.config["REDIS_URL"],
        beat_schedule={
            "etl-run": {
                "task": "kasparro.tasks.scheduled_run",
                "schedule": timedelta(seconds=app.config["ETL_INTERVAL_SECONDS"]),
                "options": {"queue": queue, "expires": app.config["ETL_INTERVAL_SECONDS"]},
            },
            "reap-stalled": {
                "task": "kasparro.tasks.reap_stalled",
                "schedule": timedelta(minutes=5),
                "options": {"queue": queue, "expires": 300},
            },
        },
    )
    celery.conf.update(app.config.get("CELERY", {}))
    celery.set_default()
    app.extensions["celery"] = celery
    import kasparro.tasks  # noqa: F401  register the tasks with this app

    return celery
