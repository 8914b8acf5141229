"""Celery tasks of the pipeline: each loads ids, calls one pipeline function, and owns retries.

A run is one chain per source: extract | transform | load. Messages carry only
the source-run id; every task first checks the world (a finished source or
batch is skipped), so a message delivered twice has the effect of one. Two
follow-ups overlap the chain on other worker processes: a transform of what is
extracted so far (`_overlap`), and a load of what transform staged
(`_overlap_load`). A raw chunk loads in its own transform, so once extraction
ends every process transforms and loads the source's chunks at once.

What a failure does (see `_on_failure`):
- transient (upstream 5xx/429, database or broker unreachable): retried with
  exponential backoff and full jitter, up to TASK_MAX_RETRIES;
- SourceBusy (another run's lease): waits for the lease, with backoff, up to
  SOURCE_BUSY_MAX_WAIT_SECONDS, without spending the retry budget;
- anything else, or out of retries: the source run fails, its lease is freed.
If even the failure cannot be recorded (the database is down), the task marks
the source run abandoned in Redis and the reaper resumes it once it can.
"""
from __future__ import annotations

import random
import time
import traceback
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import redis
from celery import Task, chain, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.log import get_task_logger
from flask import current_app
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DBAPIError, OperationalError

from kasparro import catalog, liveness, logs, redis_store
from kasparro.config import PROJECT_ROOT
from kasparro.db import db
from kasparro.errors import BrokerUnavailable, KasparroError, SourceBusy, SourceConfigError, SourceRunClosed
from kasparro.models import RawBatch, Run, SourceRun
from kasparro.pipeline import backfill, events, faults, identity, leases, quality, recovery, reprocess, runs
from kasparro.pipeline import extract as extract_stage
from kasparro.pipeline.load import load_pending, lost_stage
from kasparro.pipeline.runs import RunStart
from kasparro.pipeline.transform import transform_pending
from kasparro.redact import redact_text
from kasparro.sources import SourceContext, build_source
from kasparro.sources.base import DEFAULT_BATCH_SIZE, RequestStats, Source
from kasparro.sources.ratelimit import RedisBudgets
from kasparro.sources.window import Window, as_utc

logger = get_task_logger(__name__)

# Celery's own ceiling; the effective limits are TASK_MAX_RETRIES and SOURCE_BUSY_MAX_WAIT_SECONDS.
MAX_RETRIES = 1000
# What a retry tells of its error (in the log, the retried task's kwargs, Flower): this many characters at most.
RETRY_MESSAGE_CHARS = 500
STAGE_TASK = {"bind": True, "acks_late": True, "reject_on_worker_lost": True, "max_retries": MAX_RETRIES}


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, KasparroError):
        return exc.transient
    if isinstance(exc, DBAPIError):
        return isinstance(exc, OperationalError) or exc.connection_invalidated
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError, BrokerError))


def backoff(retries: int, base: float, cap: float) -> float:
    """Return the next retry's delay: exponential, capped, with full jitter."""
    return random.uniform(0, min(cap, base * 2 ** (retries + 1)))


def _abandoned_key(source_run_id: int) -> str:
    return f"kasparro:{current_app.config['TASK_QUEUE']}:abandoned:{source_run_id}"


def _guard(task: Task, source_run_id: int, stage: str, work: Callable[[SourceRun, RequestStats], None],
           retry: dict[str, Any]) -> None:
    """Run a stage; retry transient failures with backoff; fail the source on anything else."""
    stats = RequestStats()
    try:
        source_run = db.session.get(SourceRun, source_run_id)
        if source_run is None or source_run.status in runs.TERMINAL:
            logger.info("skipping %s: source run %s is finished or gone", stage, source_run_id)
            return
        logs.bind(run_id=source_run.run_id, source=source_run.source, source_run_id=source_run_id, stage=stage)
        if retry.get("after"):
            events.record(db.session, source_run, retry.get("kind", "retry"), retry["after"], stage)
            db.session.commit()
        work(source_run, stats)
    except SourceRunClosed as exc:
        _best_effort(db.session.rollback)
        logger.info("%s of source run %s stands down: %s", stage, source_run_id, exc)
    except Exception as exc:
        _on_failure(task, source_run_id, stage, exc, stats, retry)
        # Celery logs what a task raises, and Flower shows it: raise the error told as `said` tells it,
        # and log where it came from (the frames, not the text) for whoever debugs it.
        logger.error("%s of source run %s failed: %s\n%s", stage, source_run_id, said(exc),
                     "".join(traceback.format_tb(exc.__traceback__)))
        raise StageFailed(said(exc)) from None


def _on_failure(task: Task, source_run_id: int, stage: str, exc: Exception, stats: RequestStats,
                retry: dict[str, Any]) -> None:
    try:
        db.session.rollback()
    except Exception:  # noqa: BLE001 - a dead connection cannot roll back; start the next step afresh
        db.session.remove()
    config = current_app.config
    busy_since = retry.get("busy_since") or time.time()
    if isinstance(exc, SourceBusy) and time.time() - busy_since < config["SOURCE_BUSY_MAX_WAIT_SECONDS"]:
        # Come back when the other run's lease lapses, or later if it keeps renewing it.
        delay = max(exc.retry_in, backoff(task.request.retries, config["TASK_BACKOFF_BASE_SECONDS"],
                                          config["TASK_BACKOFF_CAP_SECONDS"])) + 0.1
        _retry(task, stage, source_run_id, exc, delay, {"kind": "busy", "busy_since": busy_since})
    if _transient(exc) and not isinstance(exc, (SourceBusy, SoftTimeLimitExceeded)) \
            and task.request.retries < config["TASK_MAX_RETRIES"]:
        _best_effort(lambda: _note_stats(source_run_id, stats))
        delay = backoff(task.request.retries, config["TASK_BACKOFF_BASE_SECONDS"], config["TASK_BACKOFF_CAP_SECONDS"])
        _retry(task, stage, source_run_id, exc, delay, {})
    if not _best_effort(lambda: _fail(source_run_id, f"{stage}: {exc}", stage, stats)):
        # The failure cannot even be written down; tell the reaper to take it from here.
        _best_effort(lambda: redis_store.client().set(_abandoned_key(source_run_id), stage, ex=7 * 86400))
        logger.error("%s of source run %s failed and could not be recorded; the reaper will resume it: %s",
                     stage, source_run_id, said(exc))


class RetriedError(Exception):
    """A failure being retried, told by its type and its redacted, bounded message.

    Celery logs the exception a retry names and Flower shows it; the message travels in the retried
    task's kwargs as well. Neither may carry what the error quoted: a URL's password, a key.
    """


class StageFailed(Exception):
    """A stage's failure that is not retried, told as a retried one is (what the task finally raises)."""


def said(exc: BaseException) -> str:
    """Put an error in words fit for logs and task messages: its type, then its text redacted and bounded."""
    # Redacted whole, then cut: cutting first could split `user:password@` and leave the password's start.
    return f"{type(exc).__name__}: {redact_text(str(exc))}"[:RETRY_MESSAGE_CHARS]


def _retry(task: Task, stage: str, source_run_id: int, exc: Exception, delay: float, extra: dict[str, Any]) -> None:
    shown = said(exc)
    logger.warning("%s of source run %s failed, retrying in %.1fs: %s", stage, source_run_id, delay, shown)
    retry = {"after": f"retry {task.request.retries + 1} after {shown}", **extra}
    raise task.retry(exc=RetriedError(shown), countdown=delay,
                     kwargs={**task.request.kwargs, "retry": retry}) from None


def _best_effort(action: Callable[[], object]) -> bool:
    """Do a bookkeeping step that must not hide the original error; False if it failed."""
    try:
        action()
        return True
    except Exception as exc:  # noqa: BLE001 - the caller is already handling a failure
        db.session.rollback()
        logger.warning("bookkeeping step failed: %s", said(exc))
        return False


def _note_stats(source_run_id: int, stats: RequestStats) -> None:
    source_run = db.session.get(SourceRun, source_run_id)
    extract_stage.record_requests(db.session, source_run, stats)
    db.session.commit()


def _fail(source_run_id: int, error: str, stage: str, stats: RequestStats | None = None) -> None:
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


def _source(source_run: SourceRun, stats: RequestStats) -> tuple[Source, str]:
    spec, config = source_run.run.config[source_run.source], current_app.config
    budgets = RedisBudgets(redis_store.client(), key_prefix=config["RATE_LIMIT_PREFIX"],
                           window_seconds=config["RATE_LIMIT_WINDOW_SECONDS"])
    context = SourceContext(secrets=config["SECRETS"], base_dir=PROJECT_ROOT, stats=stats, budget=budgets)
    # `ids` names the kind whose coin ids a source uses (a file drop in CoinPaprika's layout carries
    # CoinPaprika ids), so identity applies that kind's slug rule and overrides; it defaults to the kind.
    return build_source(source_run.source, spec, context), spec.get("ids", spec["kind"])


def _batch_size(source_run: SourceRun, source: Source) -> int:
    # A source may set its own batch size (`batch_size`): a batch is a page, a raw chunk or a transaction.
    # Else BATCH_SIZE, if set; else the kind's own default.
    size = source_run.run.config[source_run.source].get("batch_size", current_app.config["BATCH_SIZE"]
                                                        or getattr(source, "default_batch_size", DEFAULT_BATCH_SIZE))
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise SourceConfigError(f"batch_size must be a positive whole number, not {size!r}", source=source_run.source)
    return size


def _batch_bytes(source_run: SourceRun) -> int:
    # Beside the count, a batch is bounded in bytes: the source's own `max_batch_bytes`, else BATCH_MAX_BYTES.
    size = source_run.run.config[source_run.source].get("max_batch_bytes", current_app.config["BATCH_MAX_BYTES"])
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise SourceConfigError(f"max_batch_bytes must be a positive whole number of bytes, not {size!r}",
                                source=source_run.source)
    return size


def _lease() -> leases.Terms:
    return leases.Terms(current_app.config["LEASE_SECONDS"], liveness.identity())


def _faults() -> tuple[faults.Fault, ...]:
    return faults.parse(current_app.config["FAULT_INJECTION"] or "")


def _stage(source_run: SourceRun, stage: str | None, work: Callable[[leases.Terms], None]) -> None:
    """Take the source's lease, mark the stage, and do the work while a thread keeps the lease alive."""
    lease = _lease()
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


@shared_task(**STAGE_TASK)
def extract(self: Task, source_run_id: int, retry: dict[str, Any] | None = None) -> None:
    """Read what is new in a source into raw batches."""

    def work(source_run: SourceRun, stats: RequestStats) -> None:
        if source_run.extract_done:
            return
        source, _ = _source(source_run, stats)

        def read(lease: leases.Terms) -> None:
            runs.start_source(db.session, source_run)  # only once the lease is ours
            db.session.commit()
            extract_stage.extract(db.session, source_run, source, stats, _batch_size(source_run, source), lease,
                                  _faults(), on_batch=lambda batch: _overlap(source_run_id),
                                  window=backfill.window_of(source_run.run.config[source_run.source]),
                                  batch_bytes=_batch_bytes(source_run))

        _stage(source_run, "extract", read)

    _guard(self, source_run_id, "extract", work, retry or {})


def _overlap_key(source_run_id: int) -> str:
    return f"kasparro:{current_app.config['TASK_QUEUE']}:overlap:{source_run_id}"


def _overlap(source_run_id: int) -> None:
    # Transform and load what is extracted so far on another worker process while
    # extraction goes on; at most one such chain is pending per source run (the key),
    # and it is harmless if it finds nothing: the chain's own transform and load
    # come after the extract and finish whatever is left.
    try:
        if not redis_store.client().set(_overlap_key(source_run_id), 1, nx=True, ex=600):
            return
        chain(transform.si(source_run_id, overlap=True), load.si(source_run_id, overlap=True)).apply_async()
    except (BrokerError, OSError, redis.RedisError) as exc:
        logger.warning("could not start overlapping transform for source run %s: %s", source_run_id, exc)


def _overlap_load(source_run_id: int) -> None:
    # Likewise, load what is transformed so far on another worker process while transform goes on
    # (batches load in order; one that finds its predecessor unloaded is left for the next load).
    try:
        if not redis_store.client().set(_overlap_key(source_run_id) + ":load", 1, nx=True, ex=600):
            return
        load.si(source_run_id, overlap=True).apply_async()
    except (BrokerError, OSError, redis.RedisError) as exc:
        logger.warning("could not start overlapping load for source run %s: %s", source_run_id, exc)


def _overlap_load_staged(source_run_id: int, batch: RawBatch) -> None:
    # A raw chunk loaded by its transform leaves nothing for a load task.
    if batch.state == "transformed":
        _overlap_load(source_run_id)


@shared_task(**STAGE_TASK)
def transform(self: Task, source_run_id: int, overlap: bool = False, retry: dict[str, Any] | None = None) -> None:
    """Validate and resolve every extracted batch of a source run (`overlap`: while extraction goes on)."""

    def work(source_run: SourceRun, stats: RequestStats) -> None:
        source, kind = _source(source_run, stats)
        overrides = identity.load_overrides(current_app.config["ASSET_OVERRIDES_FILE"])
        _stage(source_run, None if overlap else "transform",
               lambda lease: transform_pending(db.session, source_run, source, kind, overrides, lease, _faults(),
                                               on_batch=lambda batch: _overlap_load_staged(source_run_id, batch),
                                               skip_busy=overlap, stage_all=_stage_all))

    _guard(self, source_run_id, "transform", work, retry or {})


@shared_task(**STAGE_TASK)
def load(self: Task, source_run_id: int, overlap: bool = False, retry: dict[str, Any] | None = None) -> None:
    """Load every transformed batch in order, then close the source's part of the run if it is all loaded."""

    def work(source_run: SourceRun, stats: RequestStats) -> None:
        _stage(source_run, None if overlap else "load", lambda lease: _load(source_run, stats, lease, overlap))
        if runs.close_if_loaded(db.session, source_run):
            quality.check_source_run(db.session, source_run, quality.Thresholds.from_config(current_app.config))
        db.session.commit()
        if overlap:
            redis_store.client().delete(_overlap_key(source_run_id), _overlap_key(source_run_id) + ":load")
        logger.info("source %s of run %s: %s", source_run.source, source_run.run_id, source_run.status)

    _guard(self, source_run_id, "load", work, retry or {})


def _load(source_run: SourceRun, stats: RequestStats, lease: leases.Terms, overlap: bool) -> None:
    load_pending(db.session, source_run, lease, _faults())
    if not overlap and lost_stage(db.session, source_run):
        # A PostgreSQL crash emptied quote_stage (UNLOGGED) under transformed batches: stage them again, then load.
        source, kind = _source(source_run, stats)
        overrides = identity.load_overrides(current_app.config["ASSET_OVERRIDES_FILE"])
        transform_pending(db.session, source_run, source, kind, overrides, lease, _faults())
        load_pending(db.session, source_run, lease, _faults())


def _stage_all() -> bool:
    """Say whether transform should stage every batch for the load task (LOAD_IN_TRANSFORM off)."""
    return not current_app.config["LOAD_IN_TRANSFORM"]


@shared_task(acks_late=True, reject_on_worker_lost=True)
def reap_stalled() -> list[int]:
    """Resume source runs whose worker vanished or whose messages were lost; give up after RESUME_LIMIT."""
    config = current_app.config
    client = redis_store.client()
    stalled = recovery.find_stalled(db.session, lambda ids: liveness.alive(client, ids),
                                    config["STALLED_AFTER_SECONDS"])
    stalled += [s for s in _abandoned(client) if s.source_run_id not in {x.source_run_id for x in stalled}]
    resumed = []
    for item in stalled:
        resend = recovery.resume_or_fail(db.session, item, config["RESUME_LIMIT"], config["STALLED_AFTER_SECONDS"])
        db.session.commit()
        client.delete(_abandoned_key(item.source_run_id))
        if resend:
            _send_chain(item.source_run_id)
            resumed.append(item.source_run_id)
    return resumed


def _abandoned(client: redis.Redis) -> list[recovery.Stalled]:
    prefix = _abandoned_key(0)[:-1]
    found = []
    for key in client.scan_iter(prefix + "*"):
        stage = client.get(key)
        found.append(recovery.Stalled(int(key.decode()[len(prefix):]), f"{(stage or b'?').decode()} failed while "
                                      "the database was unreachable", interrupted=True))
    return found


@shared_task(acks_late=True, reject_on_worker_lost=True)
def scheduled_run() -> int | None:
    """Start a run of every enabled source that is free, as the beat schedule asks."""
    start = enqueue_run("schedule")
    logger.info("scheduled run %s %s%s", start.run.id, "started" if start.created else "not needed",
                f"; busy: {start.busy}" if start.busy else "")
    return start.run.id


def enqueue_run(trigger: str, sources: Iterable[str] | None = None,
                idempotency_key: str | None = None) -> RunStart:
    """Record a run over the free sources and hand their chains to the broker."""
    specs = catalog.select_sources(current_app.config, sources)
    return _launch(runs.create_run(db.session, trigger, specs, idempotency_key))


def enqueue_backfill(source: str, start: datetime, end: datetime, coins: Iterable[str] = ()) -> RunStart:
    """Record a backfill run of a source over a past window and hand its chain to the broker."""
    specs = catalog.select_sources(current_app.config, [source])
    window = Window(as_utc(start), as_utc(end), tuple(coins))
    return _launch(backfill.stage_backfill(db.session, source, specs[source], window,
                                           catalog.backfill_sources(current_app.config)))


def enqueue_reprocess(source: str, run_id: int | None = None, since: datetime | None = None) -> RunStart:
    """Record a reprocess run over a source's stored raw records (of one run, or since a time) and dispatch it."""
    specs = catalog.select_sources(current_app.config, [source])
    return _launch(reprocess.stage_reprocess(db.session, source, specs[source], reprocess.Selection(run_id, since),
                                             current_app.config["BATCH_SIZE"] or DEFAULT_BATCH_SIZE))


def enqueue_replay(source: str | None = None, run_id: int | None = None,
                   since: datetime | None = None) -> RunStart:
    """Record a replay run over rejected records (of one source, or every source with some) and dispatch it."""
    specs = catalog.select_sources(current_app.config, [source] if source else None)
    return _launch(reprocess.stage_replay(db.session, specs, reprocess.Selection(run_id, since),
                                          current_app.config["BATCH_SIZE"] or DEFAULT_BATCH_SIZE,
                                          named=source is not None))


def _launch(start: RunStart) -> RunStart:
    # Sent only after the run row committed, so a worker always finds it.
    db.session.commit()
    if start.created:
        _dispatch(start.run)
    return start


def _send_chain(source_run_id: int) -> None:
    chain(extract.si(source_run_id), transform.si(source_run_id), load.si(source_run_id)).apply_async(
        retry=True, retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5})


def _dispatch(run: Run) -> None:
    for position, source_run in enumerate(run.source_runs):
        try:
            _send_chain(source_run.id)
        except (BrokerError, OSError) as exc:
            if position == 0:
                runs.discard(db.session, run.id)
                db.session.commit()
                raise BrokerUnavailable(f"broker unreachable: {exc}") from exc
            _fail(source_run.id, f"could not enqueue: {exc}", "dispatch")
