"""Celery tasks of the pipeline: thin wrappers that load ids, call the stages, and own retries.

A run is one chain per source: extract | transform | load. Messages carry only
the source-run id; every task first checks the world (a finished source or
batch is skipped), so a message delivered twice has the effect of one.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterable

import redis
from celery import Task, chain, shared_task
from celery.utils.log import get_task_logger
from flask import current_app
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, OperationalError

from kasparro import catalog, logs
from kasparro.config import PROJECT_ROOT
from kasparro.db import db
from kasparro.errors import KasparroError, SourceBusy
from kasparro.models import RawBatch, Run, SourceRun
from kasparro.pipeline import extract as extract_stage
from kasparro.pipeline import identity, leases, runs
from kasparro.pipeline.load import load_batch
from kasparro.pipeline.transform import transform_batch
from kasparro.sources import SourceContext, build_source
from kasparro.sources.base import RequestStats, Source
from kasparro.sources.ratelimit import RedisBudgets

logger = get_task_logger(__name__)

# Celery's own ceiling; the effective limit is TASK_MAX_RETRIES from the config.
MAX_RETRIES = 20


class BrokerUnavailable(KasparroError):
    """The run could not be handed to the broker."""


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, KasparroError):
        return exc.transient
    if isinstance(exc, DBAPIError):
        return isinstance(exc, OperationalError) or exc.connection_invalidated
    return False


def backoff(retries: int, base: float, cap: float) -> float:
    """Return the next retry's delay: exponential, capped, with full jitter."""
    return random.uniform(0, min(cap, base * 2 ** (retries + 1)))


def _retry_delay(exc: BaseException, retries: int) -> float:
    if isinstance(exc, SourceBusy):
        # We know when the other run's lease lapses: come back then, not at random.
        return exc.retry_in + 0.1
    config = current_app.config
    return backoff(retries, config["TASK_BACKOFF_BASE_SECONDS"], config["TASK_BACKOFF_CAP_SECONDS"])


def _guard(task: Task, source_run_id: int, stage: str, work: Callable[[SourceRun, RequestStats], None]) -> None:
    """Run a stage; retry transient failures with backoff; fail the source on anything else."""
    stats = RequestStats()
    source_run = db.session.get(SourceRun, source_run_id)
    if source_run is None or source_run.status in runs.TERMINAL:
        logger.info("skipping %s: source run %s is finished or gone", stage, source_run_id)
        return
    logs.bind(run_id=source_run.run_id, source=source_run.source, source_run_id=source_run_id, stage=stage)
    try:
        work(source_run, stats)
    except Exception as exc:
        db.session.rollback()
        if _transient(exc) and task.request.retries < current_app.config["TASK_MAX_RETRIES"]:
            _note_stats(source_run_id, stats)
            delay = _retry_delay(exc, task.request.retries)
            logger.warning("%s of source run %s failed, retrying in %.1fs: %s", stage, source_run_id, delay, exc)
            raise task.retry(exc=exc, countdown=delay) from None
        fail_source(source_run_id, f"{stage}: {exc}", stats)
        raise


def _note_stats(source_run_id: int, stats: RequestStats) -> None:
    source_run = db.session.get(SourceRun, source_run_id)
    extract_stage.record_requests(db.session, source_run, stats)
    db.session.commit()


def fail_source(source_run_id: int, error: str, stats: RequestStats | None = None) -> None:
    """Record a source's failure, free its lease and drop what it staged but never loaded."""
    source_run = db.session.get(SourceRun, source_run_id, populate_existing=True, with_for_update=True)
    if stats is not None:
        extract_stage.record_requests(db.session, source_run, stats)
    db.session.execute(
        db.text("DELETE FROM quote_stage WHERE batch_id IN (SELECT id FROM raw_batches"
                " WHERE run_source_id = :rs AND state <> 'loaded')"), {"rs": source_run_id})
    runs.finish_source(db.session, source_run, error=error)
    db.session.commit()
    logger.error("source %s of run %s failed: %s", source_run.source, source_run.run_id, error)


def _source(source_run: SourceRun, stats: RequestStats) -> tuple[Source, str]:
    spec = source_run.run.config[source_run.source]
    context = SourceContext(secrets=current_app.config["SECRETS"], base_dir=PROJECT_ROOT, stats=stats,
                            budget=_budgets())
    return build_source(source_run.source, spec, context), spec["kind"]


def _budgets() -> RedisBudgets:
    # One Redis client per process, shared by every source's request budget.
    budgets = current_app.extensions.get("kasparro_budgets")
    if budgets is None:
        budgets = RedisBudgets(redis.Redis.from_url(current_app.config["REDIS_URL"]),
                               key_prefix=current_app.config["RATE_LIMIT_PREFIX"],
                               window_seconds=current_app.config["RATE_LIMIT_WINDOW_SECONDS"])
        current_app.extensions["kasparro_budgets"] = budgets
    return budgets


def _batches(source_run: SourceRun, state: str) -> Iterable[RawBatch]:
    return db.session.execute(
        select(RawBatch).where(RawBatch.run_source_id == source_run.id, RawBatch.state == state)
        .order_by(RawBatch.seq)
    ).scalars().all()


def _hold_lease(source_run: SourceRun) -> None:
    renewed = leases.acquire(db.session, source_run.source, source_run.run_id, current_app.config["LEASE_SECONDS"])
    # Committed at once: a lease row held through a stage's work would serialise the stages.
    db.session.commit()
    if not renewed:
        holder = leases.holder(db.session, source_run.source)
        raise SourceBusy(f"run {holder} is working on this source", source=source_run.source,
                         retry_in=leases.seconds_left(db.session, source_run.source))


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=MAX_RETRIES)
def extract(self: Task, source_run_id: int) -> None:
    """Read what is new in a source into raw batches."""

    def work(source_run: SourceRun, stats: RequestStats) -> None:
        if source_run.extract_done:
            return
        _hold_lease(source_run)
        runs.start_source(db.session, source_run)
        runs.set_stage(db.session, source_run, "extract")
        source, _ = _source(source_run, stats)
        config = current_app.config
        extract_stage.extract(db.session, source_run, source, stats, config["BATCH_SIZE"], config["LEASE_SECONDS"],
                              on_batch=lambda batch: _overlap(source_run_id))

    _guard(self, source_run_id, "extract", work)


def _overlap_key(source_run_id: int) -> str:
    return f"kasparro:{current_app.config['TASK_QUEUE']}:overlap:{source_run_id}"


def _overlap(source_run_id: int) -> None:
    # Transform and load what is extracted so far on another worker process while
    # extraction goes on; at most one such chain is pending per source run (the key),
    # and it is harmless if it finds nothing: the chain's own transform and load
    # come after the extract and finish whatever is left.
    try:
        if not _budgets().redis.set(_overlap_key(source_run_id), 1, nx=True, ex=600):
            return
        chain(transform.si(source_run_id, overlap=True), load.si(source_run_id, overlap=True)).apply_async()
    except (BrokerError, OSError, redis.RedisError) as exc:
        logger.warning("could not start overlapping transform for source run %s: %s", source_run_id, exc)


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=MAX_RETRIES)
def transform(self: Task, source_run_id: int, overlap: bool = False) -> None:
    """Validate and resolve every extracted batch of a source run (`overlap`: while extraction goes on)."""

    def work(source_run: SourceRun, stats: RequestStats) -> None:
        _hold_lease(source_run)
        if not overlap:
            runs.set_stage(db.session, source_run, "transform")
        source, kind = _source(source_run, stats)
        overrides = identity.load_overrides(current_app.config["ASSET_OVERRIDES_FILE"])
        for batch in _batches(source_run, "extracted"):
            transform_batch(db.session, batch, source_run, source, kind, overrides)
            db.session.commit()
            _hold_lease(source_run)
        db.session.commit()

    _guard(self, source_run_id, "transform", work)


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=MAX_RETRIES)
def load(self: Task, source_run_id: int, overlap: bool = False) -> None:
    """Load every transformed batch in order, then close the source's part of the run if it is all loaded."""

    def work(source_run: SourceRun, stats: RequestStats) -> None:
        _hold_lease(source_run)
        if not overlap:
            runs.set_stage(db.session, source_run, "load")
        for batch in _batches(source_run, "transformed"):
            load_batch(db.session, batch, source_run)
            db.session.commit()
            _hold_lease(source_run)
        runs.lock(db.session, source_run)
        unloaded = db.session.execute(
            select(func.count()).select_from(RawBatch)
            .where(RawBatch.run_source_id == source_run.id, RawBatch.state != "loaded")
        ).scalar_one()
        # Another delivery may still be extracting; the last chain to load closes the source.
        if source_run.extract_done and not unloaded:
            runs.finish_source(db.session, source_run)
        db.session.commit()
        if overlap:
            _budgets().redis.delete(_overlap_key(source_run_id))
        logger.info("source %s of run %s: %s", source_run.source, source_run.run_id, source_run.status)

    _guard(self, source_run_id, "load", work)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def reap_stalled() -> list[int]:
    """Fail source runs whose worker vanished, so their sources are free to run again."""
    config = current_app.config
    # Generous margins: a queued chain may wait behind long tasks, and a lease is
    # renewed at every page, so only a long silence means the holder is gone.
    stalled = runs.stalled_sources(db.session, queued_for=config["STALLED_AFTER_SECONDS"],
                                   silent_for=config["STALLED_AFTER_SECONDS"])
    for source_run_id in stalled:
        fail_source(source_run_id, "stalled: no progress for too long; its worker was probably lost")
    return stalled


@shared_task(acks_late=True, reject_on_worker_lost=True)
def scheduled_run() -> int:
    """Start a run of every enabled source, as the beat schedule asks."""
    run, created = enqueue_run("schedule")
    logger.info("scheduled run %s %s", run.id, "started" if created else "already active")
    return run.id


def enqueue_run(trigger: str, sources: Iterable[str] | None = None,
                idempotency_key: str | None = None) -> tuple[Run, bool]:
    """Record a run and hand its chains to the broker; reuse an active run over the same sources."""
    specs = catalog.select_sources(current_app.config, sources)
    run, created = runs.create_run(db.session, trigger, specs, idempotency_key)
    db.session.commit()
    if created:
        _dispatch(run)
    return run, created


def _dispatch(run: Run) -> None:
    # Sent only after the run row committed, so a worker always finds it.
    for position, source_run in enumerate(run.source_runs):
        signature = chain(extract.si(source_run.id), transform.si(source_run.id), load.si(source_run.id))
        try:
            signature.apply_async(retry=True, retry_policy={"max_retries": 2, "interval_start": 0.2,
                                                            "interval_step": 0.5})
        except (BrokerError, OSError) as exc:
            if position == 0:
                runs.discard(db.session, run.id)
                db.session.commit()
                raise BrokerUnavailable(f"broker unreachable: {exc}") from exc
            fail_source(source_run.id, f"could not enqueue: {exc}")
