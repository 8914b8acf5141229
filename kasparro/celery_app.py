"""Bind Celery to the Flask app so every task runs inside an application context."""
from __future__ import annotations

import logging
from datetime import timedelta

from celery import Celery, Task
from flask import Flask

from kasparro import celery_logs
from kasparro.beat import REDIS_URL_SETTING
from kasparro.config import ETL_SCHEDULE_ENTRY, HARD_LIMIT_MARGIN_SECONDS, PARTITIONS_SCHEDULE_ENTRY, check_timing

logger = logging.getLogger(__name__)


def init_app(app: Flask) -> Celery:
    """Create the Celery app from `celeryconfig` plus this app's settings and register it."""

    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    for warning in check_timing(app.config):
        logger.warning(warning)
    celery = Celery(app.import_name, task_cls=FlaskTask)
    celery.config_from_object("celeryconfig")
    queue = app.config["TASK_QUEUE"]
    soft_limit = app.config["TASK_SOFT_TIME_LIMIT_SECONDS"]
    celery.conf.update(
        broker_url=app.config["BROKER_URL"],
        result_backend=app.config["RESULT_BACKEND"],
        task_default_queue=queue,
        # A stage past its soft limit fails its source cleanly; the hard limit kills a task that ignores it.
        task_soft_time_limit=soft_limit,
        task_time_limit=soft_limit + HARD_LIMIT_MARGIN_SECONDS,
        broker_transport_options={"visibility_timeout": app.config["BROKER_VISIBILITY_TIMEOUT_SECONDS"]},
        # Beat leaves a heartbeat in Redis so /health can tell scheduling is alive.
        beat_scheduler="kasparro.beat:HeartbeatScheduler",
        beat_schedule={
            ETL_SCHEDULE_ENTRY: {
                "task": "kasparro.tasks.scheduled_run",
                "schedule": timedelta(seconds=app.config["ETL_INTERVAL_SECONDS"]),
                "options": {"queue": queue, "expires": app.config["ETL_INTERVAL_SECONDS"]},
            },
            # Frequent, so a source whose worker died resumes within two minutes (README, Guarantees).
            "reap-stalled": {
                "task": "kasparro.tasks.reap_stalled",
                "schedule": timedelta(seconds=app.config["REAPER_INTERVAL_SECONDS"]),
                "options": {"queue": queue, "expires": app.config["REAPER_INTERVAL_SECONDS"]},
            },
            # market_quotes' monthly partitions, made months ahead (README, "Past one database"): a missed
            # day or two costs nothing, and a row of a month without one lands in DEFAULT meanwhile.
            PARTITIONS_SCHEDULE_ENTRY: {
                "task": "kasparro.tasks.maintain_partitions",
                "schedule": timedelta(days=1),
                "options": {"queue": queue, "expires": 3600},
            },
        },
    )
    # Beat's heartbeat goes to this Redis; the setting's name is one Celery masks wherever it shows its
    # configuration (Flower, `inspect conf`), as it masks broker_url and result_backend.
    celery.conf[REDIS_URL_SETTING] = app.config["REDIS_URL"]
    celery.conf.update(app.config.get("CELERY", {}))
    celery_logs.init_app(celery, app.config["LOG_FORMAT"])
    celery.set_default()
    app.extensions["celery"] = celery
    import kasparro.tasks  # noqa: F401  register the tasks with this app

    return celery
