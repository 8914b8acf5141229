"""Expose Prometheus metrics at /metrics: HTTP request metrics plus ETL figures read from Postgres.

Request metrics come from prometheus-flask-exporter. With several gunicorn workers each process only
sees its own requests, so when PROMETHEUS_MULTIPROC_DIR is set the exporter writes to that directory
and /metrics merges every process's files (prometheus_client multiprocess mode). ETL figures are not
kept in any process: a collector queries Postgres (kasparro/etl_figures.py) and reads the worker liveness
keys and beat heartbeat in Redis at scrape time, so every worker reports the same truth.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

import redis
from flask import Flask, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_flask_exporter import PrometheusMetrics

from kasparro import etl_figures, liveness
from kasparro.config import HEARTBEAT_KEY
from kasparro.db import db

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class EtlCollector(Collector):
    """Read ETL figures from Postgres and liveness from Redis each time Prometheus scrapes."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        timeout = app.config["HEALTH_TIMEOUT_SECONDS"]
        self.redis = redis.Redis.from_url(app.config["REDIS_URL"], socket_connect_timeout=timeout,
                                          socket_timeout=timeout)

    def describe(self) -> list[Metric]:
        # Declared empty so registering the collector does not query the database.
        return []

    def collect(self) -> Iterator[Metric]:
        """Yield the ETL figures and worker/beat liveness; database_up or redis_up 0 when one cannot be read."""
        yield from self._database()
        yield from self._redis()

    def _database(self) -> Iterator[Metric]:
        try:
            with self.app.app_context(), db.engine.connect() as conn:
                rows = etl_figures.read(conn, self.app.config["QUALITY_HISTORY_RUNS"],
                                        self.app.config["QUALITY_MIN_HISTORY"])
        except Exception:  # noqa: BLE001 - a scrape must answer even when the database is down
            logger.warning("could not read ETL metrics from the database", exc_info=True)
            yield _up("kasparro_database_up", "Whether the ETL figures could be read from Postgres.", ok=False)
            return
        yield _up("kasparro_database_up", "Whether the ETL figures could be read from Postgres.", ok=True)
        yield from etl_figures.families(rows, self.app.config)

    def _redis(self) -> Iterator[Metric]:
        try:
            workers = sum(1 for _ in self.redis.scan_iter(match=liveness.KEY_PREFIX + "*", count=100))
            beat = self.redis.get(HEARTBEAT_KEY)
            beat_age = None if beat is None else max(0.0, time.time() - float(beat))
        except (redis.RedisError, ValueError):
            logger.warning("could not read worker and beat liveness from Redis", exc_info=True)
            yield _up("kasparro_redis_up", "Whether worker and beat liveness could be read from Redis.", ok=False)
            return
        yield _up("kasparro_redis_up", "Whether worker and beat liveness could be read from Redis.", ok=True)
        yield GaugeMetricFamily("kasparro_live_workers", "Workers whose liveness key in Redis has not expired.",
                                value=float(workers))
        yield GaugeMetricFamily("kasparro_beat_stale_after_seconds",
                                "Heartbeat age past which beat counts as silent (HEALTH_BEAT_STALE_SECONDS).",
                                value=float(self.app.config["HEALTH_BEAT_STALE_SECONDS"]))
        if beat_age is not None:
            # Absent when beat never reported; the EtlBeatSilent rule treats absence as silence.
            yield GaugeMetricFamily("kasparro_beat_heartbeat_age_seconds", "Seconds since beat last wrote its heartbeat.",
                                    value=beat_age)


def _up(name: str, help_text: str, ok: bool) -> Metric:
    return GaugeMetricFamily(name, help_text, value=1.0 if ok else 0.0)


def multiprocess_mode() -> bool:
    """Tell whether request metrics are shared between processes through PROMETHEUS_MULTIPROC_DIR."""
    return bool(os.environ.get(MULTIPROC_ENV))


def init_app(app: Flask) -> None:
    """Track every request and serve /metrics."""
    # One registry per app: a second app in the same process (tests) must not collide.
    registry = CollectorRegistry(auto_describe=True)
    exporter = PrometheusMetrics(app=None, path=None, registry=registry, defaults_prefix="kasparro",
                                 group_by="url_rule", excluded_paths=["^/metrics$", "^/docs"])
    exporter.init_app(app)
    collector = EtlCollector(app)
    if not multiprocess_mode():
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        registry.register(collector)

    def metrics() -> Response:
        if multiprocess_mode():
            # Merge every process's request metrics at scrape time, plus the shared ETL figures.
            scrape = CollectorRegistry()
            multiprocess.MultiProcessCollector(scrape)
            scrape.register(collector)
        else:
            scrape = registry
        return Response(generate_latest(scrape), mimetype=None, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.add_url_rule("/metrics", "metrics", metrics)
    app.extensions["kasparro_metrics"] = exporter
