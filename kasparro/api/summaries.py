"""Shape runs and their per-source parts into the dictionaries the run schemas dump."""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Select, case, func, select

from kasparro.api.errors import ApiError
from kasparro.api.schemas import CALLS, COUNTERS
from kasparro.db import db
from kasparro.models import Anomaly, Asset, DriftEvent, RawBatch, Run, RunEvent, SourceRun

MAX_ID = 2**63 - 1
# Lines of a run's drift summary /runs/<id> shows (the status page polls it every 5 s); all in /drift.
MAX_DRIFT_LINES = 200


def duration(started: datetime | None, finished: datetime | None) -> float | None:
    """Return seconds between start and finish, or until now while still running."""
    if started is None:
        return None
    end = finished or datetime.now(timezone.utc)
    return round((end - started).total_seconds(), 3)


def counts(source_run: SourceRun) -> dict[str, int]:
    """Return a source run's row counters."""
    return {name: getattr(source_run, name) or 0 for name in COUNTERS}


def totals(source_runs: Iterable[SourceRun]) -> dict[str, int]:
    """Add up the row counters of a run's sources."""
    summed = dict.fromkeys(COUNTERS, 0)
    for source_run in source_runs:
        for name, value in counts(source_run).items():
            summed[name] += value
    return summed


def run_summary(run: Run) -> dict[str, Any]:
    """Return a run's headline: status, timing and row totals."""
    return {"id": run.id, "trigger": run.trigger, "status": run.status, "sources": list(run.sources),
            "error": run.error, "created_at": run.created_at, "started_at": run.started_at,
            "finished_at": run.finished_at, "duration_seconds": duration(run.started_at, run.finished_at),
            "totals": totals(run.source_runs)}


def batch_progress(source_run_ids: list[int]) -> dict[int, dict[str, int]]:
    """Count each source run's batches by how far they got (cumulative: loaded ones were also transformed)."""
    if not source_run_ids:
        return {}
    rows = db.session.execute(
        select(RawBatch.run_source_id,
               func.count().label("extracted"),
               func.count(case((RawBatch.state.in_(("transformed", "loaded")), 1))).label("transformed"),
               func.count(case((RawBatch.state == "loaded", 1))).label("loaded"))
        .where(RawBatch.run_source_id.in_(source_run_ids)).group_by(RawBatch.run_source_id)
    ).all()
    found = {row.run_source_id: {"batches_extracted": row.extracted, "batches_transformed": row.transformed,
                                 "batches_loaded": row.loaded} for row in rows}
    empty = {"batches_extracted": 0, "batches_transformed": 0, "batches_loaded": 0}
    return {i: found.get(i, empty) for i in source_run_ids}


def stage_of(source_run: SourceRun) -> str:
    """Name where a source run is: queued, extract, transform, load, or done once it finished (however it ended)."""
    if source_run.finished_at is not None:
        return "done"
    return source_run.stage or ("queued" if source_run.status == "queued" else "extract")


def read_progress(source_run: SourceRun, now: datetime | None = None) -> dict[str, Any]:
    """Return how far the source's read got in this run: units done of the total, percent and ETA.

    Counted from where this run's read began. The ETA (elapsed × remaining / done)
    is given only while running, once something was read and the total is known.
    """
    start = source_run.progress_start or 0
    done = None if source_run.progress_done is None else source_run.progress_done - start
    total = None if source_run.progress_total is None else max(source_run.progress_total - start, 0)
    percent = eta = None
    if done is not None and total is not None:
        percent = 100.0 if total == 0 else round(min(done / total, 1.0) * 100, 1)
        if done > 0 and source_run.finished_at is None and source_run.started_at is not None:
            elapsed = ((now or datetime.now(timezone.utc)) - source_run.started_at).total_seconds()
            eta = round(max(elapsed, 0) * max(total - done, 0) / done, 1)
    return {"unit": source_run.progress_unit, "done": done, "total": total, "percent": percent, "eta_seconds": eta}


def source_run_detail(source_run: SourceRun, progress: dict[str, int]) -> dict[str, Any]:
    """Return everything known about one source's part of a run."""
    return {"source": source_run.source, "status": source_run.status, "stage": source_run.stage,
            **counts(source_run), **{name: getattr(source_run, name) or 0 for name in CALLS},
            "wait_seconds": float(source_run.wait_seconds or 0), "waits": source_run.waits or 0,
            "longest_wait_seconds": float(source_run.longest_wait_seconds or 0), "error": source_run.error,
            "started_at": source_run.started_at, "finished_at": source_run.finished_at,
            "duration_seconds": duration(source_run.started_at, source_run.finished_at),
            "progress": {**progress, "stage": stage_of(source_run), **read_progress(source_run)}}


def run_events(run_id: int, limit: int = 200) -> list[dict[str, Any]]:
    """Return a run's events, oldest first."""
    found = db.session.execute(
        select(RunEvent).where(RunEvent.run_id == run_id).order_by(RunEvent.id).limit(limit)
    ).scalars()
    return [{"source": e.source, "kind": e.kind, "stage": e.stage, "detail": e.detail, "at": e.created_at}
            for e in found]


def anomaly_query() -> Select[Any]:
    """Select stored quality findings with their asset's slug, newest first."""
    return (select(Anomaly.id, Anomaly.run_id, Anomaly.source, Anomaly.rule, Asset.slug.label("asset"),
                   Anomaly.severity, Anomaly.observed, Anomaly.expected, Anomaly.detail, Anomaly.created_at)
            .outerjoin(Asset, Asset.id == Anomaly.asset_id).order_by(Anomaly.id.desc()))


def anomaly(row: Any) -> dict[str, Any]:
    """Shape one stored finding for the API."""
    found = dict(row._mapping)
    for name in ("observed", "expected"):
        found[name] = None if found[name] is None else float(found[name])
    return found


def run_anomalies(run_id: int, limit: int = 200) -> list[dict[str, Any]]:
    """Return a run's quality findings, newest first (at most `limit`)."""
    return [anomaly(row) for row in db.session.execute(anomaly_query().where(Anomaly.run_id == run_id).limit(limit))]


def run_drift(run_id: int, limit: int = MAX_DRIFT_LINES) -> tuple[list[dict[str, Any]], int]:
    """Return the first `limit` lines of the schema drift a run met (one per source and finding), and how many."""
    keys = (DriftEvent.source, DriftEvent.field, DriftEvent.kind, DriftEvent.old, DriftEvent.new, DriftEvent.action)
    lines = (select(*keys, func.max(DriftEvent.confidence).label("confidence"), func.count().label("events"),
                    func.sum(DriftEvent.records).label("records"))
             .where(DriftEvent.run_id == run_id).group_by(*keys))
    rows = db.session.execute(lines.order_by(DriftEvent.source, DriftEvent.field, DriftEvent.kind).limit(limit)).all()
    total = len(rows) if len(rows) < limit else \
        db.session.execute(select(func.count()).select_from(lines.subquery())).scalar_one()
    return [{**row._asdict(), "confidence": None if row.confidence is None else float(row.confidence),
             "records": int(row.records)} for row in rows], total


def run_progress(run: Run) -> dict[str, Any]:
    """Return a run's headline with every source's counters, timings, errors and progress (what `etl run --wait` draws)."""
    progress = batch_progress([sr.id for sr in run.source_runs])
    return {**run_summary(run), "source_runs": [source_run_detail(sr, progress[sr.id]) for sr in run.source_runs]}


def run_detail(run: Run) -> dict[str, Any]:
    """Return a run with every source's counters, timings, errors, batch progress, events, drift and findings."""
    drift, drift_total = run_drift(run.id)
    return {**run_progress(run), "events": run_events(run.id), "drift": drift, "drift_total": drift_total,
            "anomalies": run_anomalies(run.id)}


def get_run(run_id: int) -> Run:
    """Load a run or answer 404."""
    run = db.session.get(Run, run_id) if 0 < run_id <= MAX_ID else None
    if run is None:
        raise ApiError(404, "not_found", f"no run with id {run_id}")
    return run
