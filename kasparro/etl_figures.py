"""Turn the runs, source runs, drift and anomalies in Postgres into Prometheus metric families.

Each scrape runs the few set-based queries below; every figure the dashboard and the alert rules
(docker/observability/alerts.yml) use is named here, so renaming one means changing both.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import text
from sqlalchemy.engine import Connection

from kasparro.models import RUN_STATUSES

FINISHED = ("success", "partial", "failed")

_PER_SOURCE = text("""
    SELECT source,
           coalesce(sum(extracted), 0) AS extracted,
           coalesce(sum(loaded), 0) AS loaded,
           coalesce(sum(inserted), 0) AS rows,
           coalesce(sum(rejected), 0) AS rejected,
           coalesce(sum(duplicates), 0) AS duplicates,
           coalesce(sum(requests), 0) AS requests,
           coalesce(sum(retries), 0) AS retries,
           coalesce(sum(throttled), 0) AS throttled,
           coalesce(sum(wait_seconds), 0) AS wait_seconds,
           coalesce(sum(waits), 0) AS waits,
           count(*) FILTER (WHERE status = 'success') AS runs_success,
           count(*) FILTER (WHERE status = 'partial') AS runs_partial,
           count(*) FILTER (WHERE status = 'failed') AS runs_failed,
           extract(epoch FROM max(finished_at) FILTER (WHERE status IN ('success', 'partial'))) AS last_success,
           extract(epoch FROM max(finished_at) FILTER (WHERE status = 'failed')) AS last_failure
    FROM run_sources GROUP BY source ORDER BY source
""")
# Per source, through the (source, id) index: the newest source run whatever its state, the newest finished
# one, and the median rows extracted by its last :history successful runs ("usually returns many"), left
# out until :min_history of them exist so an incremental source's second, empty run is not "unusual".
_LATEST = text("""
    SELECT s.source, latest.status AS status, done.extracted, done.loaded, done.inserted, done.rejected,
           done.duration, usual.extracted AS usual_extracted
    FROM (SELECT DISTINCT source FROM run_sources) s
    LEFT JOIN LATERAL (SELECT status FROM run_sources r WHERE r.source = s.source ORDER BY id DESC LIMIT 1)
        latest ON true
    LEFT JOIN LATERAL (SELECT extracted, loaded, inserted, rejected,
                              extract(epoch FROM finished_at - started_at) AS duration
                       FROM run_sources r WHERE r.source = s.source AND status IN ('success', 'partial', 'failed')
                       ORDER BY id DESC LIMIT 1) done ON true
    LEFT JOIN LATERAL (SELECT CASE WHEN count(*) >= :min_history
                                   THEN percentile_cont(0.5) WITHIN GROUP (ORDER BY extracted) END AS extracted
                       FROM (SELECT extracted FROM run_sources r
                             WHERE r.source = s.source AND status IN ('success', 'partial')
                             ORDER BY id DESC LIMIT :history) recent) usual ON true
    ORDER BY s.source
""")
# Progress is a new raw batch or a run event (retry, resume...); the lease is renewed by a thread even
# when the stage is stuck, so it says nothing about progress.
_RUNNING = text("""
    SELECT rs.source, rs.run_id, coalesce(rs.stage, 'starting') AS stage,
           extract(epoch FROM now() - greatest(rs.started_at, b.last, e.last)) AS idle
    FROM run_sources rs
    LEFT JOIN LATERAL (SELECT max(created_at) AS last FROM raw_batches WHERE run_source_id = rs.id) b ON true
    LEFT JOIN LATERAL (SELECT max(created_at) AS last FROM run_events
                       WHERE run_id = rs.run_id AND run_source_id = rs.id) e ON true
    WHERE rs.status = 'running' ORDER BY rs.source
""")
_RUNS_BY_STATUS = text("SELECT status, count(*) AS runs FROM runs GROUP BY status")
_ANOMALIES = text("SELECT source, rule, count(*) AS found FROM anomalies GROUP BY source, rule ORDER BY source, rule")
_DRIFT = text("SELECT source, kind, count(*) AS found FROM drift_events GROUP BY source, kind ORDER BY source, kind")

# (metric name without _total, column, help) for the per-source counters summed over all runs.
_SOURCE_COUNTERS = (
    ("kasparro_extracted_records", "extracted", "Records a source's runs received, over all runs."),
    ("kasparro_loaded_records", "loaded", "Records a source's runs loaded (inserted, updated or unchanged)."),
    ("kasparro_quote_rows", "rows", "Quotes inserted by a source, over all runs."),
    ("kasparro_rejected_records", "rejected", "Records a source's runs rejected in validation."),
    ("kasparro_duplicate_records", "duplicates", "Records a source's runs received again, kept once."),
    ("kasparro_source_requests", "requests", "HTTP requests made to a source."),
    ("kasparro_source_retries", "retries", "Requests to a source that were retried."),
    ("kasparro_source_throttled_responses", "throttled", "HTTP 429 responses from a source."),
    ("kasparro_source_wait_seconds", "wait_seconds", "Seconds spent waiting on a source's rate limit."),
    ("kasparro_source_waits", "waits", "Times a source's requests waited (budget, Retry-After, backoff)."),
)
# (metric name, column, help) for the newest finished source run of each source.
_LAST_RUN_GAUGES = (
    ("kasparro_last_run_extracted_records", "extracted", "Records the source's last finished run received."),
    ("kasparro_last_run_loaded_records", "loaded", "Records the source's last finished run loaded."),
    ("kasparro_last_run_inserted_records", "inserted", "Quotes the source's last finished run inserted."),
    ("kasparro_last_run_rejected_records", "rejected", "Records the source's last finished run rejected."),
    ("kasparro_last_run_duration_seconds", "duration", "How long the source's last finished run took."),
    ("kasparro_usual_extracted_records", "usual_extracted",
     "Median records received by the source's last QUALITY_HISTORY_RUNS successful runs."),
)


def read(conn: Connection, history: int, min_history: int) -> dict[str, Sequence[Any]]:
    """Run every query once and return their rows by name."""
    return {
        "sources": conn.execute(_PER_SOURCE).all(),
        "latest": conn.execute(_LATEST, {"history": history, "min_history": min_history}).all(),
        "running": conn.execute(_RUNNING).all(),
        "runs": conn.execute(_RUNS_BY_STATUS).all(),
        "anomalies": conn.execute(_ANOMALIES).all(),
        "drift": conn.execute(_DRIFT).all(),
    }


def families(rows: Mapping[str, Sequence[Any]], settings: Mapping[str, float]) -> Iterator[Metric]:
    """Yield every ETL metric family from the rows `read` returned and the schedule settings."""
    yield from _run_metrics(rows["runs"])
    yield from _source_counters(rows["sources"])
    yield from _source_times(rows["sources"], settings["ETL_INTERVAL_SECONDS"])
    yield from _latest_metrics(rows["latest"])
    yield from _running_metrics(rows["running"], settings["STALLED_AFTER_SECONDS"])
    yield _labelled_counter("kasparro_anomalies", "Data-quality findings recorded, by source and rule.",
                            ("source", "rule"), rows["anomalies"])
    yield _labelled_counter("kasparro_drift_events", "Schema drift events per source and kind.",
                            ("source", "kind"), rows["drift"])


def _labelled_counter(name: str, help_text: str, labels: tuple[str, str], rows: Sequence[Any]) -> Metric:
    family = CounterMetricFamily(name, help_text, labels=list(labels))
    for first, second, found in rows:
        family.add_metric([first, second], float(found))
    return family


def _run_metrics(rows: Sequence[Any]) -> Iterator[Metric]:
    # A finished status only ever grows (a counter); queued and running come and go (a gauge).
    by_status = {status: float(runs) for status, runs in rows}
    finished = CounterMetricFamily("kasparro_runs", "ETL runs finished, by final status.", labels=["status"])
    active = GaugeMetricFamily("kasparro_runs_in_progress", "ETL runs queued or running now.", labels=["status"])
    for status in RUN_STATUSES:
        (finished if status in FINISHED else active).add_metric([status], by_status.get(status, 0.0))
    yield finished
    yield active


def _source_counters(sources: Sequence[Any]) -> Iterator[Metric]:
    for name, column, help_text in _SOURCE_COUNTERS:
        family = CounterMetricFamily(name, help_text, labels=["source"])
        for row in sources:
            family.add_metric([row.source], float(getattr(row, column)))
        yield family
    runs = CounterMetricFamily("kasparro_source_runs", "Source runs finished, by source and final status.",
                               labels=["source", "status"])
    for row in sources:
        for status in FINISHED:
            runs.add_metric([row.source, status], float(getattr(row, f"runs_{status}")))
    yield runs


def _source_times(sources: Sequence[Any], interval: float) -> Iterator[Metric]:
    for name, column, help_text in (
        ("kasparro_last_success_timestamp_seconds", "last_success", "When a source's last successful run ended."),
        ("kasparro_last_failure_timestamp_seconds", "last_failure", "When a source's last failed run ended."),
    ):
        gauge = GaugeMetricFamily(name, help_text, labels=["source"])
        for row in sources:
            if getattr(row, column) is not None:
                gauge.add_metric([row.source], float(getattr(row, column)))
        yield gauge
    # Per source, so freshness compares with it label for label.
    schedule = GaugeMetricFamily("kasparro_schedule_interval_seconds",
                                 "Seconds between scheduled runs of a source (ETL_INTERVAL_SECONDS).", labels=["source"])
    for row in sources:
        schedule.add_metric([row.source], float(interval))
    yield schedule


def _latest_metrics(latest: Sequence[Any]) -> Iterator[Metric]:
    state = GaugeMetricFamily("kasparro_last_run_status",
                              "1 for the status of a source's newest source run, 0 for the others.",
                              labels=["source", "status"])
    for row in latest:
        for status in RUN_STATUSES:
            state.add_metric([row.source, status], 1.0 if row.status == status else 0.0)
    yield state
    for name, column, help_text in _LAST_RUN_GAUGES:
        gauge = GaugeMetricFamily(name, help_text, labels=["source"])
        for row in latest:
            if getattr(row, column) is not None:
                gauge.add_metric([row.source], float(getattr(row, column)))
        yield gauge


def _running_metrics(running: Sequence[Any], stalled_after: float) -> Iterator[Metric]:
    idle = GaugeMetricFamily("kasparro_running_source_idle_seconds",
                             "Seconds since a running source run last made progress (a batch or an event), by stage.",
                             labels=["source", "run_id", "stage"])
    for row in running:
        idle.add_metric([row.source, str(row.run_id), row.stage], max(0.0, float(row.idle or 0.0)))
    yield idle
    yield GaugeMetricFamily("kasparro_stalled_after_seconds",
                            "Seconds without progress after which the reaper resumes a source run.",
                            value=float(stalled_after))

