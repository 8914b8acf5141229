"""Expose Prometheus metrics at /metrics: HTTP request metrics plus ETL figures read from Postgres.

Request metrics come from prometheus-flask-exporter. With several gunicorn workers each process only
sees its own requests, so when PROMETHEUS_MULTIPROC_DIR is set the exporter writes to that directory
and /metrics merges every process's files (prometheus_client multiprocess mode). ETL figures are not
kept in any process: a collector queries Postgres at scrape time, so every worker reports the same truth.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

from flask import Flask, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_flask_exporter import PrometheusMetrics
from sqlalchemy import text

from kasparro.db import db

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_PER_SOURCE = text("""
    SELECT source,
           coalesce(sum(inserted), 0) AS rows,
           coalesce(sum(rejected), 0) AS rejected,
           coalesce(sum(duplicates), 0) AS duplicates,
           coalesce(sum(requests), 0) AS requests,
           coalesce(sum(retries), 0) AS retries,
           coalesce(sum(throttled), 0) AS throttled,
           coalesce(sum(wait_seconds), 0) AS wait_seconds,
           coalesce(sum(waits), 0) AS waits,
           extract(epoch FROM max(finished_at) FILTER (WHERE status IN ('success', 'partial'))) AS last_success,
           extract(epoch FROM max(finished_at) FILTER (WHERE status = 'failed')) AS last_failure
    FROM run_sources GROUP BY source ORDER BY source
""")
_RUNS_BY_STATUS = text("SELECT status, count(*) FROM runs GROUP BY status")
_ANOMALIES = text("SELECT source, rule, count(*) AS found FROM anomalies GROUP BY source, rule ORDER BY source, rule")
_DRIFT = text("SELECT source, kind, count(*) FROM drift_events GROUP BY source, kind ORDER BY source, kind")

# (metric suffix, column, help) for the per-source counters summed over all runs.
_SOURCE_COUNTERS = (
    ("quote_rows", "rows", "Quotes inserted by a source, over all runs."),
    ("rejected_records", "rejected", "Records a source's runs rejected in validation."),
    ("duplicate_records", "duplicates", "Records a source's runs received again, kept once."),
    ("source_requests", "requests", "HTTP requests made to a source."),
    ("source_retries", "retries", "Requests to a source that were retried."),
    ("source_throttled_responses", "throttled", "HTTP 429 responses from a source."),
    ("source_wait_seconds", "wait_seconds", "Seconds spent waiting on a source's rate limit."),
    ("source_waits", "waits", "Times a source's requests waited (budget, Retry-After, backoff)."),
)


class EtlCollector(Collector):
    """Read ETL figures from Postgres each time Prometheus scrapes."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def describe(self) -> list[Metric]:
        # Declared empty so registering the collector does not query the database.
        return []

    def collect(self) -> Iterator[Metric]:
        """Yield run, row, reject, request, freshness and anomaly figures; database_up 0 when Postgres fails."""
        up = GaugeMetricFamily("kasparro_database_up", "Whether the ETL figures could be read from Postgres.")
        try:
            with self.app.app_context():
                with db.engine.connect() as conn:
                    sources = conn.execute(_PER_SOURCE).all()
                    statuses = conn.execute(_RUNS_BY_STATUS).all()
                    anomalies = conn.execute(_ANOMALIES).all()
                    drift = conn.execute(_DRIFT).all()
        except Exception:  # noqa: BLE001 - a scrape must answer even when the database is down
            logger.warning("could not read ETL metrics from the database", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _run_metrics(statuses)
        yield from _source_metrics(sources)
        yield _anomaly_metric(anomalies)
        yield _drift_metric(drift)



def _anomaly_metric(anomalies: Sequence[Any]) -> Metric:
    found = CounterMetricFamily("kasparro_anomalies", "Data-quality findings recorded, by source and rule.",
                                labels=["source", "rule"])
    for row in anomalies:
        found.add_metric([row.source, row.rule], float(row.found))
    return found



def _drift_metric(rows: Sequence[Any]) -> Metric:
    family = CounterMetricFamily("kasparro_drift_events", "Schema drift events per source and kind.",
                                 labels=["source", "kind"])
    for source, kind, number in rows:
        family.add_metric([source, kind], number)
    return family


def _run_metrics(statuses: Sequence[Any]) -> Iterator[Metric]:
    runs = GaugeMetricFamily("kasparro_runs", "ETL runs currently in each status.", labels=["status"])
    for status, number in statuses:
        runs.add_metric([status], number)
    yield runs


def _source_metrics(sources: Sequence[Any]) -> Iterator[Metric]:
    for suffix, column, help_text in _SOURCE_COUNTERS:
        family = CounterMetricFamily(f"kasparro_{suffix}", help_text, labels=["source"])
        for row in sources:
            family.add_metric([row.source], float(getattr(row, column)))
        yield family
    for name, column, help_text in (
        ("kasparro_last_success_timestamp_seconds", "last_success", "When a source's last successful run ended."),
        ("kasparro_last_failure_timestamp_seconds", "last_failure", "When a source's last failed run ended."),
    ):
        gauge = GaugeMetricFamily(name, help_text, labels=["source"])
        for row in sources:
            if getattr(row, column) is not None:
                gauge.add_metric([row.source], float(getattr(row, column)))
        yield gauge


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
