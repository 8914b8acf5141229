"""Celery tasks of the pipeline: each calls one function of `kasparro.stages` on an id, and owns retries.

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
- anything else, or out of retries: the source run fails, its lease is freed;
- except a database outage out of retries, or a failure that cannot be
  recorded: the task marks the source run abandoned in Redis and the reaper
  resumes it once it can (within RESUME_LIMIT).
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

from kasparro import catalog, liveness, redis_store, stages
from kasparro.db import db
from kasparro.errors import BrokerUnavailable, KasparroError, SourceBusy
from kasparro.models import RawBatch, Run, SourceRun
from kasparro.pipeline import backfill, partitions, recovery, reprocess, runs
from kasparro.pipeline.outage import database_unreachable
from kasparro.pipeline import extract as extract_stage
from kasparro.pipeline.runs import RunStart
from kasparro.redact import redact_text
from kasparro.sources.base import DEFAULT_BATCH_SIZE, RequestStats
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
    if database_unreachable(exc):
        return True
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError, BrokerError))


def backoff(retries: int, base: float, cap: float) -> float:
    """Return the next retry's delay: exponential, capped, with full jitter."""
    return random.uniform(0, min(cap, base * 2 ** (retries + 1)))


def _abandoned_key(source_run_id: int) -> str:
    return f"kasparro:{current_app.config['TASK_QUEUE']}:abandoned:{source_run_id}"


def _guard(task: Task, source_run_id: int, stage: str, work: stages.Work, retry: dict[str, Any]) -> None:
    """Run a stage; retry transient failures with backoff; fail the source on anything else."""

    def failed(exc: Exception, stats: RequestStats) -> None:
        _on_failure(task, source_run_id, stage, exc, stats, retry)
        # Celery logs what a task raises, and Flower shows it: raise the error told as `said` tells it,
        # and log where it came from (the frames, not the text) for whoever debugs it.
        logger.error("%s of source run %s failed: %s\n%s", stage, source_run_id, said(exc),
                     "".join(traceback.format_tb(exc.__traceback__)))
        raise StageFailed(said(exc)) from None

    note = (retry.get("kind", "retry"), retry["after"]) if retry.get("after") else None
    stages.guarded(source_run_id, stage, work, failed, note)


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
    # A database outage says nothing of the source: past the retries the run waits for the reaper, whether or
    # not the database is back by now (which one it is is a race with its restart, not a property of the run).
    outage = database_unreachable(exc)
    if outage or not _best_effort(lambda: stages.fail(source_run_id, f"{stage}: {exc}", stage, stats)):
        # The reaper resumes it (within RESUME_LIMIT); if Redis is gone too, the stalled-run scan finds it.
        _best_effort(lambda: redis_store.client().set(_abandoned_key(source_run_id), stage, ex=7 * 86400))
        logger.error("%s of source run %s %s; the reaper will resume it: %s", stage, source_run_id,
                     "gave up while the database was unreachable" if outage else "failed and could not be recorded",
                     said(exc))


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


@shared_task(**STAGE_TASK)
def extract(self: Task, source_run_id: int, retry: dict[str, Any] | None = None) -> None:
    """Read what is new in a source into raw batches."""
    _guard(self, source_run_id, "extract",
           lambda source_run, stats: stages.extract(source_run, stats, on_batch=lambda _: _overlap(source_run_id)),
           retry or {})


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
    _guard(self, source_run_id, "transform",
           lambda source_run, stats: stages.transform(
               source_run, stats, overlap, on_batch=lambda batch: _overlap_load_staged(source_run_id, batch)),
           retry or {})


@shared_task(**STAGE_TASK)
def load(self: Task, source_run_id: int, overlap: bool = False, retry: dict[str, Any] | None = None) -> None:
    """Load every transformed batch in order, then close the source's part of the run if it is all loaded."""

    def work(source_run: SourceRun, stats: RequestStats) -> None:
        stages.load(source_run, stats, overlap)
        if overlap:
            redis_store.client().delete(_overlap_key(source_run_id), _overlap_key(source_run_id) + ":load")
        logger.info("source %s of run %s: %s", source_run.source, source_run.run_id, source_run.status)

    _guard(self, source_run_id, "load", work, retry or {})


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


# Idempotent; retried when it gave up waiting for its lock (partitions.LOCK_TIMEOUT) or the database was away.
@shared_task(acks_late=True, reject_on_worker_lost=True, autoretry_for=(OperationalError,), retry_backoff=30,
             max_retries=5)
def maintain_partitions() -> dict[str, Any]:
    """Make market_quotes' partitions ahead, move DEFAULT's rows into theirs, and drop the expired months."""
    config = current_app.config
    done = partitions.maintain(db.session, config["QUOTES_PARTITION_MONTHS_AHEAD"], config["QUOTES_RETENTION_MONTHS"],
                               history=config["QUOTES_PARTITION_HISTORY"])
    db.session.commit()
    return {"created": done.created, "moved": done.moved, "dropped": done.dropped}


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
            stages.fail(source_run.id, f"could not enqueue: {exc}", "dispatch")
