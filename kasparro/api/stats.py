"""Summarise the ETL per source and per run status: GET /stats."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import distinct_on

from kasparro.api.auth import read_access
from kasparro.api.base import Blueprint
from kasparro.api.envelope import single
from kasparro.api.params import NoParams
from kasparro.api.schemas import StatsSchema, envelope
from kasparro.api.summaries import counts, run_summary
from kasparro.db import db
from kasparro.models import RUN_STATUSES, SUCCEEDED, DriftEvent, RejectedRecord, Run, SourceRun

blp = Blueprint("stats", __name__, description="ETL figures per source and per run status.")


def _per_source() -> dict[str, dict[str, Any]]:
    # Quotes are never deleted, so the rows a source inserted over all runs is its row count,
    # read from the small run table instead of counting the quotes table on every request.
    rows = db.session.execute(
        select(SourceRun.source, func.coalesce(func.sum(SourceRun.inserted), 0).label("rows_total"),
               func.max(SourceRun.finished_at).filter(SourceRun.status.in_(SUCCEEDED)).label("last_success_at"),
               func.max(SourceRun.finished_at).filter(SourceRun.status == "failed").label("last_failure_at"))
        .group_by(SourceRun.source)
    ).all()
    return {row.source: {"source": row.source, "rows_total": int(row.rows_total),
                         "last_success_at": row.last_success_at, "last_failure_at": row.last_failure_at,
                         "rejected_total": 0, "last_error": None, "drift_events_last_run": 0} for row in rows}


def _latest_source_runs(*conditions: Any) -> list[SourceRun]:
    query = (select(SourceRun).where(*conditions).ext(distinct_on(SourceRun.source))
             .order_by(SourceRun.source, SourceRun.run_id.desc()))
    return list(db.session.execute(query).scalars())


def _drift_counts(source_run_ids: list[int]) -> dict[int, int]:
    return dict(db.session.execute(
        select(DriftEvent.run_source_id, func.count()).where(DriftEvent.run_source_id.in_(source_run_ids))
        .group_by(DriftEvent.run_source_id)).all())


def source_stats() -> list[dict[str, Any]]:
    """Return every source's totals, its last run's figures (drift included), and its last success and failure."""
    stats = _per_source()
    latest = _latest_source_runs()
    drifted = _drift_counts([sr.id for sr in latest])
    for source_run in latest:
        stats[source_run.source].update(
            last_run_id=source_run.run_id, last_run_status=source_run.status, last_run=counts(source_run),
            requests_last_run=source_run.requests, retries_last_run=source_run.retries,
            throttled_last_run=source_run.throttled, wait_seconds_last_run=float(source_run.wait_seconds or 0),
            waits_last_run=source_run.waits or 0,
            longest_wait_seconds_last_run=float(source_run.longest_wait_seconds or 0),
            drift_events_last_run=drifted.get(source_run.id, 0))
    for source_run in _latest_source_runs(SourceRun.status == "failed"):
        stats[source_run.source]["last_error"] = source_run.error
    rejected = db.session.execute(
        select(RejectedRecord.source, func.count()).group_by(RejectedRecord.source)).all()
    for source, number in rejected:
        if source in stats:
            stats[source]["rejected_total"] = number
    return [stats[name] for name in sorted(stats)]


def runs_by_status() -> dict[str, int]:
    """Count runs in each status, listing every status even when zero."""
    found = dict(db.session.execute(select(Run.status, func.count()).group_by(Run.status)).all())
    return {status: found.get(status, 0) for status in RUN_STATUSES}


def freshness(stats: dict[str, Any], interval: float, now: datetime) -> dict[str, Any]:
    """Return how old a source's last success is, and whether that is stale: over twice the schedule interval."""
    last = stats.get("last_success_at")
    age = None if last is None else round((now - last).total_seconds(), 1)
    return {"freshness_seconds": age, "stale": age is None or age > 2 * interval}


def stats_report() -> dict[str, Any]:
    """Return /stats: every source's figures and freshness, runs by status and the last run."""
    interval = float(current_app.config["ETL_INTERVAL_SECONDS"])
    now = datetime.now(timezone.utc)
    last = db.session.execute(select(Run).order_by(Run.id.desc()).limit(1)).scalar_one_or_none()
    return {"sources": [{**row, **freshness(row, interval, now)} for row in source_stats()],
            "runs_by_status": runs_by_status(), "last_run": run_summary(last) if last is not None else None}


@blp.route("/stats")
@read_access
@blp.arguments(NoParams, location="query")
@blp.response(200, envelope(StatsSchema, "StatsResponse"))
@blp.errors(400, 401)
def stats(_: dict[str, Any]) -> dict[str, Any]:
    """Report rows, rejects, rate-limit evidence, freshness and last success and failure per source, and runs by status."""
    return single(stats_report())
