"""Change run and per-source run state: the one place statuses move."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from kasparro.models import IdempotencyKey, Run, SourceRun
from kasparro.pipeline import leases

TERMINAL = ("success", "partial", "failed")
ACTIVE = ("queued", "running")
# Serialises "is a run already active for these sources?" decisions.
ENQUEUE_LOCK_KEY = 7_311_001


def active_run_for(session: Session, sources: Sequence[str]) -> Run | None:
    """Return a queued or running run that covers any of `sources`."""
    query = (
        select(Run)
        .where(Run.status.in_(ACTIVE), Run.sources.overlap(list(sources)))
        .order_by(Run.id)
        .limit(1)
    )
    return session.execute(query).scalar_one_or_none()


def create_run(
    session: Session,
    trigger: str,
    specs: Mapping[str, Mapping[str, Any]],
    idempotency_key: str | None = None,
) -> tuple[Run, bool]:
    """Record a queued run over `specs` unless one is active for them; return (run, created)."""
    session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ENQUEUE_LOCK_KEY})
    if idempotency_key:
        remembered = session.execute(
            select(Run).join(IdempotencyKey, IdempotencyKey.run_id == Run.id).where(IdempotencyKey.key == idempotency_key)
        ).scalar()
        if remembered is not None:
            return remembered, False
    names = sorted(specs)
    run, created = active_run_for(session, names), False
    if run is None:
        run = Run(trigger=trigger, status="queued", sources=names, config={n: dict(specs[n]) for n in names})
        run.source_runs = [SourceRun(source=name, status="queued") for name in names]
        session.add(run)
        session.flush()
        created = True
    if idempotency_key:
        # Remembered whether the run is new or reused, so a retry after it finished still gets it.
        session.add(IdempotencyKey(key=idempotency_key, run_id=run.id))
        session.flush()
    return run, created


# Every record read is one of: loaded, rejected, a duplicate, or skipped (see README, "counting law").
COUNTERS = ("extracted", "loaded", "inserted", "updated", "skipped", "rejected", "duplicates",
            "requests", "retries", "throttled", "wait_seconds", "waits")
MAXIMA = ("longest_wait_seconds",)


def add_counts(session: Session, source_run: SourceRun, **deltas: float) -> None:
    """Add to a source run's counters (and raise its maxima) in place, so concurrent stages never overwrite each other."""
    unknown = set(deltas) - set(COUNTERS) - set(MAXIMA)
    if unknown:
        raise ValueError(f"unknown counters: {sorted(unknown)}")
    changes = {k: (func.greatest(getattr(SourceRun, k), v) if k in MAXIMA else getattr(SourceRun, k) + v)
               for k, v in deltas.items() if v}
    if changes:
        session.execute(update(SourceRun).where(SourceRun.id == source_run.id).values(**changes))


def lock(session: Session, source_run: SourceRun) -> None:
    """Re-read a source run under a row lock, so concurrent deliveries change its counters in turn."""
    session.refresh(source_run, with_for_update=True)


def set_stage(session: Session, source_run: SourceRun, stage: str) -> None:
    """Record which stage a source run is in, for progress reports."""
    session.execute(update(SourceRun).where(SourceRun.id == source_run.id).values(stage=stage))
    session.commit()


def start_source(session: Session, source_run: SourceRun) -> None:
    """Mark a source (and its run) running."""
    now = func.now()
    session.execute(
        update(SourceRun)
        .where(SourceRun.id == source_run.id, SourceRun.status == "queued")
        .values(status="running", started_at=now)
    )
    session.execute(
        update(Run).where(Run.id == source_run.run_id, Run.status == "queued").values(status="running", started_at=now)
    )


def finish_source(session: Session, source_run: SourceRun, error: str | None = None) -> None:
    """Close a source's part of the run, free its lease, and close the run if it was the last."""
    lock(session, source_run)
    if source_run.status in TERMINAL:
        return
    if error is not None:
        source_run.status = "failed"
        source_run.error = error[:4000]
    else:
        source_run.status = "partial" if source_run.rejected else "success"
    source_run.stage = None
    source_run.finished_at = func.now()
    leases.release(session, source_run.source, source_run.run_id)
    session.flush()
    _close_run_if_done(session, source_run.run_id)


def _close_run_if_done(session: Session, run_id: int) -> None:
    # Lock the run row so two sources finishing together decide once.
    session.execute(select(Run.id).where(Run.id == run_id).with_for_update())
    statuses = session.execute(select(SourceRun.status).where(SourceRun.run_id == run_id)).scalars().all()
    if any(s not in TERMINAL for s in statuses):
        return
    session.execute(
        update(Run).where(Run.id == run_id).values(status=overall_status(statuses), finished_at=func.now())
    )


def overall_status(statuses: Sequence[str]) -> str:
    """Fold per-source statuses into the run's: failed if all failed, partial if any fell short."""
    if statuses and all(s == "failed" for s in statuses):
        return "failed"
    if any(s in ("failed", "partial") for s in statuses):
        return "partial"
    return "success"


def discard(session: Session, run_id: int) -> None:
    """Delete a run that was never handed to a worker."""
    session.execute(text("DELETE FROM runs WHERE id = :r"), {"r": run_id})


_STALLED = text(
    """
    SELECT rs.id FROM run_sources rs
    JOIN runs r ON r.id = rs.run_id
    LEFT JOIN source_leases l ON l.source = rs.source AND l.run_id = rs.run_id
    WHERE (rs.status = 'queued' AND r.created_at < now() - make_interval(secs => :queued_for))
       OR (rs.status = 'running' AND coalesce(l.expires_at, rs.started_at)
           < now() - make_interval(secs => :silent_for))
    """
)


def stalled_sources(session: Session, queued_for: int, silent_for: int) -> list[int]:
    """Find source runs never picked up, or whose lease lapsed long ago (their worker is gone)."""
    return list(session.execute(_STALLED, {"queued_for": queued_for, "silent_for": silent_for}).scalars())
