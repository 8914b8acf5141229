"""Change run and per-source run state: the one place statuses move."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from kasparro.models import IdempotencyKey, RawBatch, Run, SourceRun
from kasparro.pipeline import drift_log, events, leases, targets
from kasparro.redact import redact_text
from kasparro.sources.base import Progress

TERMINAL = ("success", "partial", "failed")
ACTIVE = ("queued", "running")
# Serialises "is a run already active for these sources?" decisions.
ENQUEUE_LOCK_KEY = 7_311_001


@dataclass(frozen=True)
class RunStart:
    """What a trigger got: the run answering it, whether that run is new, and who holds the busy sources."""

    run: Run
    created: bool
    # Sources asked for but left out because another active run holds them: source -> that run's id.
    busy: dict[str, int] = field(default_factory=dict)


def busy_sources(session: Session, sources: Sequence[str]) -> dict[str, int]:
    """Return which of `sources` an active run holds, and which run."""
    rows = session.execute(
        select(SourceRun.source, SourceRun.run_id)
        .where(SourceRun.status.in_(ACTIVE), SourceRun.source.in_(list(sources)))
        .order_by(SourceRun.run_id)
    ).all()
    return {source: run_id for source, run_id in reversed(rows)}


def create_run(
    session: Session,
    trigger: str,
    specs: Mapping[str, Mapping[str, Any]],
    idempotency_key: str | None = None,
) -> RunStart:
    """Record a queued run over the sources of `specs` that no active run holds.

    A source held by another run is left out and reported, so one slow or
    failing source never holds back the others. When every source is held,
    no run is created and the oldest run holding one answers instead.
    """
    session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ENQUEUE_LOCK_KEY})
    if idempotency_key:
        remembered = session.execute(
            select(Run).join(IdempotencyKey, IdempotencyKey.run_id == Run.id).where(IdempotencyKey.key == idempotency_key)
        ).scalar()
        if remembered is not None:
            return RunStart(remembered, False)
    busy = busy_sources(session, sorted(specs))
    free = [name for name in sorted(specs) if name not in busy]
    if free:
        run = Run(trigger=trigger, status="queued", sources=free, config={n: dict(specs[n]) for n in free})
        run.source_runs = [SourceRun(source=name, status="queued") for name in free]
        session.add(run)
        session.flush()
    else:
        run = session.get(Run, min(busy.values()))
    if idempotency_key:
        # Remembered whether the run is new or reused, so a retry after it finished still gets it.
        session.add(IdempotencyKey(key=idempotency_key, run_id=run.id))
        session.flush()
    return RunStart(run, bool(free), busy)


# Every record read is one of: loaded, rejected, a duplicate, or skipped (see README, "counting law").
COUNTERS = ("extracted", "loaded", "inserted", "updated", "skipped", "rejected", "duplicates",
            "requests", "retries", "throttled", "wait_seconds", "waits")
MAXIMA = ("longest_wait_seconds",)


def add_counts(session: Session, source_run: SourceRun, progress: Progress | None = None, **deltas: float) -> None:
    """Add to a source run's counters (and raise its maxima) in place, so concurrent stages never overwrite each other.

    `progress`, the read's position after a batch, goes into the same statement.
    """
    unknown = set(deltas) - set(COUNTERS) - set(MAXIMA)
    if unknown:
        raise ValueError(f"unknown counters: {sorted(unknown)}")
    changes = {k: (func.greatest(getattr(SourceRun, k), v) if k in MAXIMA else getattr(SourceRun, k) + v)
               for k, v in deltas.items() if v}
    changes.update(_progress_values(progress))
    if changes:
        session.execute(update(SourceRun).where(SourceRun.id == source_run.id).values(**changes))


def _progress_values(progress: Progress | None) -> dict[str, Any]:
    if progress is None:
        return {}
    # The first batch of the run fixes where its read began; a resumed extract keeps that origin.
    return {"progress_unit": progress.unit, "progress_done": progress.done, "progress_total": progress.total,
            "progress_start": func.coalesce(SourceRun.progress_start, progress.start)}


def lock(session: Session, source_run: SourceRun) -> None:
    """Re-read a source run under a row lock, so concurrent deliveries change its counters in turn."""
    session.refresh(source_run, with_for_update=True)


def set_stage(session: Session, source_run: SourceRun, stage: str) -> None:
    """Record which stage a source run is in, for progress reports (the caller commits)."""
    # A late delivery (the chain's own load after an overlapping one closed the source) must not reopen a stage.
    session.execute(update(SourceRun).where(SourceRun.id == source_run.id, SourceRun.finished_at.is_(None))
                    .values(stage=stage))


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
        # /runs and /stats serve this text: a URL it quotes may carry a password or a key.
        source_run.error = redact_text(error)[:4000]
    else:
        # Drift is never a plain success: the source run is partial, and its error says what drifted.
        drifted = drift_log.summary(session, source_run.id)
        source_run.status = "partial" if source_run.rejected or drifted else "success"
        source_run.error = drifted[:4000] if drifted else None
    source_run.stage = None
    source_run.finished_at = func.clock_timestamp()  # now() is the transaction start: before the load
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
        update(Run).where(Run.id == run_id).values(status=overall_status(statuses), finished_at=func.clock_timestamp())
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


def fail_source(session: Session, source_run_id: int, error: str, stage: str | None = None) -> SourceRun | None:
    """Record a source's failure, free its lease and drop what it staged but never loaded (the caller commits).

    Return the source run failed now; None if it is gone or had already finished (another task closed it),
    whose status and error then stand.
    """
    source_run = session.get(SourceRun, source_run_id, populate_existing=True, with_for_update=True)
    if source_run is None or source_run.status in TERMINAL:
        return None
    # The staging table of the source's own target: a news source's items wait in news_stage, not quote_stage.
    session.execute(
        text(f"DELETE FROM {targets.of_run(source_run).stage_table} WHERE batch_id IN (SELECT id FROM raw_batches"
             " WHERE run_source_id = :rs AND state <> 'loaded')"), {"rs": source_run_id})
    finish_source(session, source_run, error=error)
    events.record(session, source_run, "failed", error, stage)
    return source_run


def pending_batches(session: Session, source_run: SourceRun, state: str) -> list[RawBatch]:
    """Return a source run's batches in one state, in the order they were extracted."""
    return list(session.execute(
        select(RawBatch).where(RawBatch.run_source_id == source_run.id, RawBatch.state == state)
        .order_by(RawBatch.seq)
    ).scalars())


def close_if_loaded(session: Session, source_run: SourceRun) -> bool:
    """Close the source's part of the run if extraction ended and every batch loaded; True if closed now.

    Another delivery may still be extracting, so the last chain to load closes it.
    """
    lock(session, source_run)
    unloaded = session.execute(
        select(func.count()).select_from(RawBatch)
        .where(RawBatch.run_source_id == source_run.id, RawBatch.state != "loaded")
    ).scalar_one()
    if source_run.status in TERMINAL or not source_run.extract_done or unloaded:
        return False
    finish_source(session, source_run)
    return True
