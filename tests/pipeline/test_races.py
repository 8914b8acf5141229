"""Races the worker tests cannot time: each is forced at the exact point with a hook in the source's pages.

The stages run in this process against the real database; the hook acts
through a second connection, as another worker would.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask, current_app
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from kasparro import catalog, liveness
from kasparro.db import db
from kasparro.errors import SourceBusy, SourceRunClosed
from kasparro.models import DriftEvent, MarketQuote, RawBatch, RawRecord, RunEvent, SourceRun
from kasparro.pipeline import drift_log, leases, recovery, runs
from kasparro.pipeline.extract import extract
from kasparro.pipeline.load import load_batch, load_pending
from kasparro.pipeline.transform import transform_pending
from kasparro.sources import SourceContext, build_source
from kasparro.sources.base import Page, RequestStats
from kasparro.tasks import reap_stalled
from tests.conftest import SESSION_TAG, wait_for_run
from tests.pipeline.helpers import HEADER, csv_spec, declare

ROWS = "".join(f"bitcoin,2019-04-{day:02d},{5000 + day}.5,1000,2000\n" for day in range(1, 29))
LEASE = leases.Terms(60, "this-worker/1")


class Hooked:
    """A real CSV source that calls `hook(n)` just before handing out page n (1-based)."""

    def __init__(self, source: Any, hook: Callable[[int], None]) -> None:
        self.source, self.hook = source, hook
        self.name, self.kind = source.name, source.kind

    def pages(self, cursor: Mapping[str, Any] | None, page_size: int) -> Iterator[Page]:
        for number, page in enumerate(self.source.pages(cursor, page_size), start=1):
            self.hook(number)
            yield page

    def to_unified(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        return self.source.to_unified(payload)

    def expected_schema(self) -> Mapping[str, Any]:
        return self.source.expected_schema()


@pytest.fixture
def started(app: Flask, sources_file: Path, tmp_path: Path) -> Iterator[tuple[SourceRun, Callable[..., Hooked]]]:
    """A running source run over a 28-row CSV, and a way to build its source with a hook."""
    path = tmp_path / "daily.csv"
    path.write_text(HEADER + ROWS)
    declare(sources_file, {"daily": csv_spec(path)})
    with app.app_context():
        source_run = runs.create_run(db.session, "cli", catalog.select_sources(app.config, None)).run.source_runs[0]
        runs.start_source(db.session, source_run)
        LEASE.take(db.session, "daily", source_run.run_id)

        def hooked(hook: Callable[[int], None]) -> Hooked:
            return Hooked(build_source("daily", source_run.run.config["daily"], SourceContext()), hook)

        yield source_run, hooked


def other_worker(sql: str, **params: Any) -> None:
    """Run a statement on its own connection and commit it, as a concurrent worker would."""
    with db.engine.begin() as conn:
        conn.execute(text(sql), params)


def count(model: type, **where: Any) -> int:
    query = select(func.count()).select_from(model)
    for column, value in where.items():
        query = query.where(getattr(model, column) == value)
    return db.session.execute(query).scalar_one()


def test_the_second_of_two_deliveries_of_one_extract_stands_down(started) -> None:
    source_run, hooked = started

    def first_delivery_wins(page: int) -> None:
        if page == 1:  # the other delivery writes batch 1 between our resume point and our write
            other_worker("INSERT INTO raw_batches (run_source_id, source, seq, state, cursor_after, received,"
                         " new_records) VALUES (:rs, 'daily', 1, 'extracted', '{}', 0, 0)", rs=source_run.id)

    written = extract(db.session, source_run, hooked(first_delivery_wins), RequestStats(), 10, LEASE)

    assert written == 0
    assert count(RawBatch, run_source_id=source_run.id) == 1
    assert count(RawRecord) == 0
    assert db.session.get(SourceRun, source_run.id).extract_done is False


def test_a_lease_lost_mid_extract_stops_the_extract_after_the_batch_it_finished(started) -> None:
    source_run, hooked = started

    def another_run_takes_over(page: int) -> None:
        if page == 2:
            other_worker("UPDATE source_leases SET run_id = 999, expires_at = now() + interval '1 minute'")

    with pytest.raises(SourceBusy, match="run 999"):
        extract(db.session, source_run, hooked(another_run_takes_over), RequestStats(), 10, LEASE)

    db.session.rollback()
    assert count(RawBatch, run_source_id=source_run.id) == 1
    assert count(RawRecord) == 10


def test_an_already_loaded_batch_is_skipped_by_a_late_load(started) -> None:
    source_run, hooked = started
    extract(db.session, source_run, hooked(lambda _: None), RequestStats(), 10, LEASE)
    source = hooked(lambda _: None)
    transform_pending(db.session, source_run, source, "csv", {}, LEASE)
    db.session.commit()
    with Session(db.engine) as late_delivery:
        # The late delivery read the batch while it was still waiting to load.
        stale = late_delivery.execute(select(RawBatch).where(RawBatch.seq == 1)).scalar_one()
        assert stale.state == "transformed"
        load_pending(db.session, source_run, LEASE)

        late = load_batch(late_delivery, stale, late_delivery.get(SourceRun, source_run.id))
        late_delivery.commit()

    assert late is None
    assert count(MarketQuote) == 28
    assert db.session.get(SourceRun, source_run.id).inserted == 28


def test_the_reaper_resends_a_silent_run_under_a_live_worker_once_stalled_after_passes_and_a_worker_finishes_it(
        app: Flask, started, worker, monkeypatch: pytest.MonkeyPatch) -> None:
    source_run, _ = started
    run_id, source_run_id = source_run.run_id, source_run.id
    # The lease's holder still beats (its liveness key is there), but nothing renewed its lease for ten minutes:
    # the chain's messages were lost. Only STALLED_AFTER_SECONDS tells the reaper to step in.
    peer = leases.Terms(60, f"live-peer-{SESSION_TAG}/1")  # tagged: no key shared with a developer's workers
    peer.take(db.session, "daily", run_id)
    live_key = liveness.KEY_PREFIX + str(peer.holder)
    redis.Redis.from_url(app.config["REDIS_URL"]).set(live_key, 1, ex=300)
    other_worker("UPDATE source_leases SET expires_at = now() - interval '10 minutes'")
    db.session.commit()
    try:
        monkeypatch.setitem(app.config, "STALLED_AFTER_SECONDS", 3600)
        assert reap_stalled.run() == [], "resent before STALLED_AFTER_SECONDS passed"
        monkeypatch.setitem(app.config, "STALLED_AFTER_SECONDS", 300)
        assert reap_stalled.run() == [source_run_id]
    finally:
        redis.Redis.from_url(app.config["REDIS_URL"]).delete(live_key)

    finished = wait_for_run(app, run_id)  # the resent chain, through the broker, on the real worker

    assert finished.status == "success"
    assert count(MarketQuote) == 28
    marks = [(e.kind, e.detail) for e in db.session.execute(
        select(RunEvent).where(RunEvent.run_source_id == source_run_id, RunEvent.kind.in_(("interrupted", "resumed")))
        .order_by(RunEvent.id)).scalars()]
    assert [kind for kind, _ in marks] == ["interrupted", "resumed"]
    assert "no progress" in marks[0][1] and "resent by the reaper" in marks[1][1]


def test_a_held_lease_is_renewed_in_the_background_while_a_long_step_runs(started) -> None:
    source_run, _ = started
    short = leases.Terms(1.5, "this-worker/1")
    short.take(db.session, "daily", source_run.run_id)
    as_taken = lease_expiry()

    with leases.hold(db.engine, "daily", source_run.run_id, short):
        wait_until_past(as_taken)  # without a renewal the lease would have lapsed by now
        live_holder = leases.holder(db.session, "daily")
        db.session.commit()
    last_renewed = lease_expiry()
    wait_until_past(last_renewed)

    assert live_holder == source_run.run_id
    assert lease_expiry() == last_renewed, "renewals went on after the step ended"
    assert leases.holder(db.session, "daily") is None


def lease_expiry() -> Any:
    expiry = db.session.execute(text("SELECT expires_at FROM source_leases WHERE source = 'daily'")).scalar_one()
    db.session.commit()
    return expiry


def wait_until_past(moment: Any, timeout: float = 30) -> None:
    """Return once the database's clock has passed `moment` (the clock the leases are judged by)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        passed = db.session.execute(text("SELECT clock_timestamp() > :moment"), {"moment": moment}).scalar_one()
        db.session.commit()
        if passed:
            return
        time.sleep(0.05)
    raise AssertionError(f"the database clock did not pass {moment} in {timeout}s")


def test_a_stage_still_working_after_its_source_run_failed_cannot_take_the_lease_back(started) -> None:
    source_run, _ = started
    runs.fail_source(db.session, source_run.id, "failed by another delivery")
    db.session.commit()

    with pytest.raises(SourceRunClosed):
        LEASE.take(db.session, "daily", source_run.run_id)

    assert leases.holder(db.session, "daily") is None
    assert runs.create_run(db.session, "api", catalog.select_sources(current_app.config, None)).created


def test_a_lease_renewal_racing_the_close_of_its_source_run_does_not_write_the_lease_back(started) -> None:
    source_run, _ = started
    db.session.commit()
    closing = db.engine.connect()  # another process closing the source run: not committed yet
    closer = closing.execute(text("SELECT pg_backend_pid()")).scalar_one()
    closing.execute(text("UPDATE run_sources SET status = 'success' WHERE id = :id"), {"id": source_run.id})
    closing.execute(text("DELETE FROM source_leases WHERE source = 'daily'"))
    renewer: queue.Queue[int] = queue.Queue()
    renewed: list[bool] = []
    engine, run_id = db.engine, source_run.run_id
    renewal = threading.Thread(target=lambda: renewed.append(_acquire_on_own_session(engine, run_id, renewer)))
    renewal.start()
    # The renewal's statement started while the run was still open, and now waits on the closer's row lock.
    wait_until_waiting_on(renewer.get(timeout=10), closer)

    closing.commit()
    renewal.join(timeout=10)
    closing.close()

    assert renewed == [False]
    assert leases.holder(db.session, "daily") is None, "the lease was written back for a closed run"


def _acquire_on_own_session(engine: Engine, run_id: int, backend: queue.Queue[int]) -> bool:
    with Session(engine) as session, session.begin():
        backend.put(session.execute(text("SELECT pg_backend_pid()")).scalar_one())
        return leases.acquire(session, "daily", run_id, 60, "renewer/1")


def wait_until_waiting_on(waiter: int, holder: int, engine: Engine | None = None, timeout: float = 10) -> None:
    """Return once backend `waiter` waits on a lock that backend `holder` holds (pg_stat_activity, pg_locks)."""
    deadline = time.monotonic() + timeout
    # Autocommit: pg_stat_activity is read once per transaction, so each look needs a fresh one.
    with (engine or db.engine).connect().execution_options(isolation_level="AUTOCOMMIT") as watcher:
        while time.monotonic() < deadline:
            if watcher.execute(text("SELECT wait_event_type = 'Lock' AND :holder = ANY(pg_blocking_pids(pid))"
                                    " FROM pg_stat_activity WHERE pid = :waiter"),
                               {"waiter": waiter, "holder": holder}).scalar():
                return
            time.sleep(0.02)
    raise AssertionError(f"backend {waiter} never waited on a lock of backend {holder}")


def test_a_worker_taking_over_from_a_dead_one_records_the_interruption(started) -> None:
    source_run, _ = started
    db.session.commit()

    took_over = recovery.note_takeover(db.session, source_run, "this-worker/1", "fresh-worker/2", alive=lambda _: set())
    alive_peer = recovery.note_takeover(db.session, source_run, "this-worker/1", "fresh-worker/2",
                                        alive=lambda ids: set(ids))
    db.session.commit()

    assert (took_over, alive_peer) == (True, False)
    assert [e.kind for e in db.session.execute(select(RunEvent).order_by(RunEvent.id)).scalars()] == [
        "interrupted", "resumed"]


def test_two_batches_counting_drift_at_once_take_turns_so_the_cap_holds(started) -> None:
    # Worker processes transform one run's batches at once. Each counts the `added` events written so
    # far against drift_max_findings, then writes its own: the second count must see the first's events.
    source_run, _ = started
    db.session.commit()
    engine = db.engine  # the thread below has no app context
    first = Session(engine)
    holder = first.execute(text("SELECT pg_backend_pid()")).scalar_one()
    assert drift_log.added_so_far(first, source_run.id) == 0
    first.add_all(DriftEvent(source="daily", run_id=source_run.run_id, run_source_id=source_run.id, field=f"k{n}",
                             kind="added", action="noted") for n in range(3))
    first.flush()

    counted: list[int] = []
    backend: queue.Queue[int] = queue.Queue()

    def second_batch() -> None:
        with Session(engine) as session, session.begin():
            backend.put(session.execute(text("SELECT pg_backend_pid()")).scalar_one())
            counted.append(drift_log.added_so_far(session, source_run.id))

    other = threading.Thread(target=second_batch)
    other.start()
    wait_until_waiting_on(backend.get(timeout=10), holder)  # it waits for the first batch's transaction
    first.commit()
    other.join(timeout=10)
    first.close()

    assert counted == [3]
