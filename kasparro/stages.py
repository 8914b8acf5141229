"""What each pipeline task does to a source run, as plain functions that the tasks and the test runner call.

A task (kasparro.tasks) is the Celery edge around one of them: it passes a hook
that sends follow-up messages, and an `on_error` that retries or gives up. The
work itself (take the lease, mark the stage, extract, transform or load while a
thread keeps the lease alive, close the source run) lives here only, so a test
that runs the stages without a worker runs the same code a worker runs.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import current_app

from kasparro import liveness, logs, redis_store
from kasparro.config import PROJECT_ROOT
from kasparro.db import db
from kasparro.errors import SourceConfigError, SourceRunClosed
from kasparro.models import RawBatch, SourceRun
from kasparro.redact import redact_text
from kasparro.pipeline import backfill, events, faults, identity, leases, partitions, quality, recovery, runs
from kasparro.pipeline import extract as extract_stage
from kasparro.pipeline.load import load_pending, lost_stage
from kasparro.pipeline.transform import transform_pending
from kasparro.sources import SourceContext, build_source, ids_kind
from kasparro.sources.base import DEFAULT_BATCH_SIZE, RequestStats, Source
from kasparro.sources.ratelimit import RedisBudgets

logger = logging.getLogger(__name__)

Work = Callable[[SourceRun, RequestStats], None]
OnBatch = Callable[[RawBatch], None]


def guarded(source_run_id: int, stage: str, work: Work, on_error: Callable[[Exception, RequestStats], None],
            note: tuple[str, str] | None = None) -> None:
    """Do `work` on an open source run (a finished or missing one is skipped); hand its error to `on_error`.

    `note` (kind, text) is recorded in the run's history first: a retry says why it came back.
    A stage that finds its source run closed under it (SourceRunClosed) stands down quietly.
    """
    stats = RequestStats()
    try:
        source_run = db.session.get(SourceRun, source_run_id)
        if source_run is None or source_run.status in runs.TERMINAL:
            logger.info("skipping %s: source run %s is finished or gone", stage, source_run_id)
            return
        logs.bind(run_id=source_run.run_id, source=source_run.source, source_run_id=source_run_id, stage=stage)
        if note is not None:
            events.record(db.session, source_run, note[0], note[1], stage)
            db.session.commit()
        work(source_run, stats)
    except SourceRunClosed as exc:
        _rollback_quietly()
        logger.info("%s of source run %s stands down: %s", stage, source_run_id, exc)
    except Exception as exc:  # noqa: BLE001 - every other error is the caller's to retry or give up on
        on_error(exc, stats)


def _rollback_quietly() -> None:
    try:
        db.session.rollback()
    except Exception as exc:  # noqa: BLE001 - a dead connection cannot roll back; the stage stands down anyway
        logger.warning("bookkeeping step failed: %s", type(exc).__name__)


def extract(source_run: SourceRun, stats: RequestStats, on_batch: OnBatch | None = None) -> None:
    """Read what is new in the source into raw batches (nothing once extraction is done)."""
    if source_run.extract_done:
        return
    source, _ = build(source_run, stats)

    def read(lease: leases.Terms) -> None:
        runs.start_source(db.session, source_run)  # only once the lease is ours
        db.session.commit()
        extract_stage.extract(db.session, source_run, source, stats, batch_size(source_run, source), lease,
                              injected_faults(), on_batch=on_batch,
                              window=backfill.window_of(source_run.run.config[source_run.source]),
                              batch_bytes=batch_bytes(source_run))

    _under_lease(source_run, "extract", read)


def transform(source_run: SourceRun, stats: RequestStats, overlap: bool = False,
              on_batch: OnBatch | None = None) -> None:
    """Validate and resolve every extracted batch (`overlap`: while extraction goes on, passing busy batches)."""
    source, kind = build(source_run, stats)
    known = overrides(source)
    _under_lease(source_run, None if overlap else "transform",
                 lambda lease: transform_pending(db.session, source_run, source, kind, known, lease, injected_faults(),
                                                 on_batch=on_batch, skip_busy=overlap, stage_all=stage_all))


def load(source_run: SourceRun, stats: RequestStats, overlap: bool = False) -> None:
    """Load every transformed batch in order, then close the source's part of the run if it is all loaded."""
    _under_lease(source_run, None if overlap else "load", lambda lease: _load(source_run, stats, lease, overlap))
    closed = runs.close_if_loaded(db.session, source_run)
    if closed:
        quality.check_source_run(db.session, source_run, quality.Thresholds.from_config(current_app.config))
    db.session.commit()
    if closed and (source_run.inserted or source_run.updated):
        partitions.summarize_new_ranges(db.session)  # after the commit: the run is final without waiting for it


def _load(source_run: SourceRun, stats: RequestStats, lease: leases.Terms, overlap: bool) -> None:
    load_pending(db.session, source_run, lease, injected_faults())
    if not overlap and lost_stage(db.session, source_run):
        # A PostgreSQL crash emptied quote_stage (UNLOGGED) under transformed batches: stage them again, then load.
        source, kind = build(source_run, stats)
        transform_pending(db.session, source_run, source, kind, overrides(source), lease, injected_faults())
        load_pending(db.session, source_run, lease, injected_faults())


def fail(source_run_id: int, error: str, stage: str, stats: RequestStats | None = None) -> None:
    """Fail the source run (its lease is freed) with what its requests cost so far, and commit."""
    source_run = db.session.get(SourceRun, source_run_id)
    if stats is not None and source_run is not None:
        extract_stage.record_requests(db.session, source_run, stats)
    failed = runs.fail_source(db.session, source_run_id, error, stage)
    db.session.commit()
    if failed is not None:
        logger.error("source %s of run %s failed: %s", failed.source, failed.run_id, failed.error)
    elif source_run is not None:
        # A sibling task (the overlapping load) closed the source run first: its status stands, but say
        # what failed here rather than the closed run's own error, which is None when it succeeded.
        logger.error("%s of source %s of run %s failed after the source run had finished (%s): %s", stage,
                     source_run.source, source_run.run_id, source_run.status, redact_text(error)[:4000])


def _under_lease(source_run: SourceRun, stage: str | None, work: Callable[[leases.Terms], None]) -> None:
    """Take the source's lease, mark the stage, and do the work while a thread keeps the lease alive."""
    lease = lease_terms()
    previous = leases.held_by(db.session, source_run.source, source_run.run_id)
    lease.take(db.session, source_run.source, source_run.run_id)
    if recovery.note_takeover(db.session, source_run, previous, lease.holder,
                              lambda ids: liveness.alive(redis_store.client(), ids)):
        db.session.commit()
    if stage is not None:
        runs.set_stage(db.session, source_run, stage)
        db.session.commit()
    with leases.hold(db.engine, source_run.source, source_run.run_id, lease):
        work(lease)


def build(source_run: SourceRun, stats: RequestStats) -> tuple[Source, str]:
    """Build the source run's source as its spec declares it; return it with the kind whose coin ids it uses."""
    spec, config = source_run.run.config[source_run.source], current_app.config
    budgets = RedisBudgets(redis_store.client(), key_prefix=config["RATE_LIMIT_PREFIX"],
                           window_seconds=config["RATE_LIMIT_WINDOW_SECONDS"])
    context = SourceContext(secrets=config["SECRETS"], base_dir=PROJECT_ROOT, stats=stats, budget=budgets)
    return build_source(source_run.source, spec, context), ids_kind(spec)


def overrides(source: Source | None = None) -> dict[tuple[str, str], str]:
    """Return the deployment's asset overrides (ASSET_OVERRIDES_FILE), under the source's own (`coins`), which win."""
    return identity.source_overrides(identity.load_overrides(current_app.config["ASSET_OVERRIDES_FILE"]), source)


def batch_size(source_run: SourceRun, source: Source | Any) -> int:
    """Return how many records a batch holds: the source's `batch_size`, else BATCH_SIZE, else the kind's default."""
    # A batch is a page, a raw chunk or a transaction.
    size = source_run.run.config[source_run.source].get("batch_size", current_app.config["BATCH_SIZE"]
                                                        or getattr(source, "default_batch_size", DEFAULT_BATCH_SIZE))
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise SourceConfigError(f"batch_size must be a positive whole number, not {size!r}", source=source_run.source)
    return size


def batch_bytes(source_run: SourceRun) -> int:
    """Return a batch's bound in bytes: the source's own `max_batch_bytes`, else BATCH_MAX_BYTES."""
    size = source_run.run.config[source_run.source].get("max_batch_bytes", current_app.config["BATCH_MAX_BYTES"])
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise SourceConfigError(f"max_batch_bytes must be a positive whole number of bytes, not {size!r}",
                                source=source_run.source)
    return size


def lease_terms() -> leases.Terms:
    """Return the lease this process takes: LEASE_SECONDS long, held by this worker (None outside one)."""
    return leases.Terms(current_app.config["LEASE_SECONDS"], liveness.identity())


def injected_faults() -> tuple[faults.Fault, ...]:
    """Return the faults FAULT_INJECTION asks the stages to inject."""
    return faults.parse(current_app.config["FAULT_INJECTION"] or "")


def stage_all() -> bool:
    """Say whether transform should stage every batch for the load task (LOAD_IN_TRANSFORM off)."""
    return not current_app.config["LOAD_IN_TRANSFORM"]
