"""Delivery guarantees: one run per source at a time, and messages that are safe to deliver twice."""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import redis
from celery import Task, chain
from celery.result import AsyncResult
from flask import Flask
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from kasparro import catalog
from kasparro.errors import SourceConfigError
from kasparro.db import db
from kasparro.models import MarketQuote, Run, SourceRun
from kasparro.pipeline import events, leases, runs
from kasparro.tasks import enqueue_run, extract, load, reap_stalled, scheduled_run, transform
from tests.api.conftest import AUTH
from tests.conftest import BROKER_URL, QUEUE, SESSION_TAG, wait_for_run
from tests.pipeline.helpers import HEADER, csv_spec, declare, quote_count, run_now

ROWS = "".join(f"bitcoin,2019-04-{day:02d},{5000 + day}.5,1000,2000\n" for day in range(1, 29))


@pytest.fixture
def daily(sources_file: Path, tmp_path: Path) -> Path:
    path = tmp_path / "daily.csv"
    path.write_text(HEADER + ROWS)
    declare(sources_file, {"daily": csv_spec(path)})
    return path


def test_a_trigger_whose_sources_are_all_held_returns_the_run_holding_them(app: Flask, daily: Path) -> None:
    with app.app_context():
        specs = catalog.select_sources(app.config, None)
        active = runs.create_run(db.session, "schedule", specs).run
        db.session.commit()

        start = enqueue_run("api")

        assert (start.run.id, start.created, start.busy) == (active.id, False, {"daily": active.id})


def test_a_trigger_takes_the_free_sources_and_names_the_run_holding_each_busy_one(
        app: Flask, sources_file: Path, tmp_path: Path) -> None:
    declare(sources_file, {name: csv_spec(tmp_path / f"{name}.csv") for name in ("slow_api", "csv_a", "csv_b")})
    with app.app_context():
        specs = catalog.select_sources(app.config, None)
        stuck = runs.create_run(db.session, "schedule", specs).run
        for source_run in stuck.source_runs:
            source_run.status = "running" if source_run.source == "slow_api" else "success"
        db.session.commit()

        start = runs.create_run(db.session, "api", specs)

        assert start.created and start.run.id != stuck.id
        assert start.run.sources == ["csv_a", "csv_b"]
        assert start.busy == {"slow_api": stuck.id}


def test_the_same_idempotency_key_returns_the_same_run(app: Flask, daily: Path) -> None:
    with app.app_context():
        specs = catalog.select_sources(app.config, None)
        first = runs.create_run(db.session, "api", specs, idempotency_key="abc")
        db.session.commit()
        first.run.status = "success"
        db.session.commit()

        again = runs.create_run(db.session, "api", specs, idempotency_key="abc")

        assert first.created and not again.created
        assert again.run.id == first.run.id


def test_a_key_answered_with_a_reused_run_still_gets_that_run_after_it_ends(app: Flask, daily: Path) -> None:
    with app.app_context():
        specs = catalog.select_sources(app.config, None)
        active = runs.create_run(db.session, "schedule", specs).run
        reused = runs.create_run(db.session, "api", specs, idempotency_key="retry-me")
        db.session.commit()
        for part in [active, *active.source_runs]:
            part.status = "success"
        db.session.commit()

        retried = runs.create_run(db.session, "api", specs, idempotency_key="retry-me")

        assert (reused.run.id, reused.created, retried.run.id, retried.created) == (active.id, False, active.id, False)


@pytest.mark.usefixtures("worker")
def test_a_source_leased_to_another_run_waits_until_the_lease_ends(app: Flask, daily: Path) -> None:
    lease_ends = datetime.now(timezone.utc) + timedelta(seconds=3)
    with app.app_context():
        db.session.execute(text("INSERT INTO source_leases (source, run_id, expires_at) VALUES ('daily', 999, :e)"),
                           {"e": lease_ends})
        db.session.commit()

    run = run_now(app, timeout=90)

    assert run.status == "success"
    with app.app_context():
        first_loaded = db.session.execute(select(func.min(MarketQuote.ingested_at))).scalar_one()
    assert first_loaded >= lease_ends


def _worker_holds(app: Flask) -> list[str]:
    """Return the names of the tasks the test worker is running or holds to run later (started, reserved, due)."""
    name = f"test-{SESSION_TAG}@{os.uname().nodename}"
    inspect = app.extensions["celery"].control.inspect(destination=[name], timeout=1)
    replies = [inspect.active(), inspect.reserved(), inspect.scheduled()]
    assert all(reply and name in reply for reply in replies), replies
    # A task due later (a retry's countdown) is told inside its "request".
    return [task.get("request", task)["name"] for reply in replies for task in reply[name]]


def _broker_holds() -> list[str]:
    """Return the names of this session's task messages the broker holds, queued or unacknowledged."""
    client = redis.Redis.from_url(BROKER_URL)
    queued = [json.loads(body) for body in client.lrange(QUEUE, 0, -1)]
    # Other sessions share the unacknowledged hash: only this session's queue counts.
    unacked = [json.loads(entry)[0] for entry in client.hvals("unacked") if json.loads(entry)[2] == QUEUE]
    return [message["headers"]["task"] for message in queued + unacked]


def _wait_idle(app: Flask, timeout: float = 60) -> None:
    """Wait until no task of this session is queued, unacknowledged, running or held by the worker."""
    deadline = time.monotonic() + timeout
    while (left := _broker_holds() + _worker_holds(app)):
        assert time.monotonic() < deadline, f"tasks still left: {left}"
        time.sleep(0.2)


@pytest.fixture
def settled(app: Flask, worker: subprocess.Popen) -> Iterator[None]:
    """After the test, wait until no task of it is left to run, so none reaches the next test's rows.

    The next test empties the tables and restarts their ids: a leftover load of source run 1 would
    work on that test's source run 1.
    """
    yield
    _wait_idle(app)


def _lock_waiters(app: Flask) -> int:
    with app.app_context():
        return db.session.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                       " AND wait_event_type = 'Lock'")).scalar_one()


def _deliver_twice_at_once(app: Flask, task: Task, source_run_id: int, source: str) -> list[AsyncResult]:
    """Deliver a stage twice and let both deliveries start together; return their results once both ended.

    The test holds the source's lease row, so each delivery stops at its first step (taking the lease)
    until both are seen waiting there (pg_stat_activity); then both go on at once.
    """
    _wait_idle(app)  # nothing else (an overlapping transform) is running or waiting
    with app.app_context(), db.engine.connect() as holder:
        holder.execute(text("SELECT 1 FROM source_leases WHERE source = :s FOR UPDATE"), {"s": source})
        # Results kept (tasks ignore them by default), so the test sees each delivery end.
        deliveries = [task.si(source_run_id).set(ignore_result=False).apply_async() for _ in range(2)]
        deadline = time.monotonic() + 30
        while _lock_waiters(app) < 2:
            assert time.monotonic() < deadline, "the two deliveries never both waited on the lease"
            time.sleep(0.05)
        holder.rollback()
    for delivery in deliveries:
        delivery.get(timeout=60)
    return deliveries


@pytest.fixture
def no_overlap() -> Iterator[Callable[[int], None]]:
    """Mark a source run's overlapping transform and load as already sent, so only the test's deliveries run.

    Otherwise extraction's first batch sends them, and they finish the run before the test's own
    deliveries of transform and load meet on anything.
    """
    client, keys = redis.Redis.from_url(BROKER_URL), []

    def mark(source_run_id: int) -> None:
        keys.extend(f"kasparro:{QUEUE}:overlap:{source_run_id}{end}" for end in ("", ":load"))
        for key in keys:
            client.set(key, 1, ex=600)

    yield mark
    for key in keys:  # the next test's source run 1 must overlap as usual
        client.delete(key)


@pytest.mark.usefixtures("settled")
def test_every_stage_delivered_twice_loads_each_row_once(app: Flask, daily: Path,
                                                        no_overlap: Callable[[int], None]) -> None:
    with app.app_context():
        run = runs.create_run(db.session, "cli", catalog.select_sources(app.config, None)).run
        db.session.commit()
        run_id, source_run_id = run.id, run.source_runs[0].id
        leases.acquire(db.session, "daily", run_id, 600)  # the row the deliveries meet on
        db.session.commit()
    no_overlap(source_run_id)
    # Each stage delivered twice, both deliveries at work at once: what a redelivery after a
    # visibility timeout, or a duplicated publish, looks like to the workers.
    deliveries = [delivery for stage in (extract, transform, load)
                  for delivery in _deliver_twice_at_once(app, stage, source_run_id, "daily")]
    finished = wait_for_run(app, run_id)

    assert [d.state for d in deliveries] == ["SUCCESS"] * 6
    assert finished.status == "success"
    assert quote_count(app) == 28
    with app.app_context():
        source_run = db.session.get(SourceRun, source_run_id)
        assert (source_run.extracted, source_run.inserted, source_run.loaded) == (28, 28, 28)
        raw = db.session.execute(text("SELECT (SELECT coalesce(sum(records), 0) FROM raw_chunks)"
                                      " + (SELECT count(*) FROM raw_records)")).scalar_one()
        assert raw == 28  # the file read once into the raw layer, not once per delivery


@pytest.mark.usefixtures("worker")
def test_a_finished_source_run_ignores_a_late_duplicate(app: Flask, daily: Path) -> None:
    run = run_now(app)
    source_run_id = run.source_runs[0].id

    late = chain(extract.si(source_run_id), transform.si(source_run_id),
                 load.si(source_run_id).set(ignore_result=False)).apply_async()
    late.get(timeout=30)

    assert quote_count(app) == 28
    with app.app_context():
        assert db.session.get(SourceRun, source_run_id).inserted == 28


@pytest.mark.usefixtures("worker")
def test_the_reaper_resends_a_source_run_no_worker_picked_up(app: Flask, daily: Path) -> None:
    with app.app_context():
        never_picked = runs.create_run(db.session, "schedule", catalog.select_sources(app.config, None)).run
        db.session.execute(text("UPDATE runs SET created_at = now() - interval '2 hours' WHERE id = :r"),
                           {"r": never_picked.id})
        db.session.commit()
        run_id, source_run_id = never_picked.id, never_picked.source_runs[0].id

        resumed = reap_stalled.run()

        assert resumed == [source_run_id]
        assert events.count(db.session, source_run_id, "resumed") == 1
    assert wait_for_run(app, run_id).status == "success"
    assert quote_count(app) == 28


def test_the_reaper_gives_up_after_the_resume_limit(app: Flask, daily: Path) -> None:
    with app.app_context():
        specs = catalog.select_sources(app.config, None)
        hopeless = runs.create_run(db.session, "schedule", specs).run
        db.session.execute(text("UPDATE runs SET created_at = now() - interval '2 hours' WHERE id = :r"),
                           {"r": hopeless.id})
        source_run = hopeless.source_runs[0]
        for _ in range(app.config["RESUME_LIMIT"]):
            events.record(db.session, source_run, "resumed", "an earlier resume")
        db.session.commit()

        assert reap_stalled.run() == []

        db.session.expire_all()
        assert db.session.get(SourceRun, source_run.id).status == "failed"
        assert "gave up after" in db.session.get(SourceRun, source_run.id).error
        assert db.session.get(Run, hopeless.id).status == "failed"
        assert runs.create_run(db.session, "api", specs).created


@pytest.mark.usefixtures("worker")
def test_the_reaper_leaves_a_run_that_is_making_progress(app: Flask, daily: Path) -> None:
    with app.app_context():
        run = runs.create_run(db.session, "schedule", catalog.select_sources(app.config, None)).run
        db.session.commit()
        run_id, source_run = run.id, run.source_runs[0]
        leases.acquire(db.session, "daily", run.id, 600, holder="some-dead-worker/1")
        runs.start_source(db.session, source_run)
        db.session.commit()
        # Control: the same run with its lease lapsed IS resumed, so this test can fail.
        assert reap_stalled.run() == []
        db.session.execute(text("UPDATE source_leases SET expires_at = now() - interval '1 second'"))
        db.session.commit()

        assert reap_stalled.run() == [source_run.id]
        assert events.count(db.session, source_run.id, "interrupted") == 1
    assert wait_for_run(app, run_id).status == "success"


def test_a_run_with_no_enabled_source_is_refused_not_left_queued(app: Flask, sources_file: Path) -> None:
    sources_file.write_text("# nothing declared\n")

    with app.app_context(), pytest.raises(SourceConfigError, match="no sources are enabled"):
        enqueue_run("schedule")
    with app.app_context():
        assert db.session.execute(select(func.count()).select_from(Run)).scalar_one() == 0


@pytest.mark.usefixtures("worker")
def test_ten_concurrent_posts_and_a_beat_tick_run_each_source_once_at_a_time(
        app: Flask, sources_file: Path, tmp_path: Path) -> None:
    for name in ("csv_a", "csv_b"):
        (tmp_path / f"{name}.csv").write_text(HEADER + ROWS)
    declare(sources_file, {name: csv_spec(tmp_path / f"{name}.csv") for name in ("csv_a", "csv_b")})
    start = threading.Barrier(11)

    def post() -> int:
        client = app.test_client()
        start.wait()
        return client.post("/run-etl", headers=AUTH).status_code

    def tick() -> int:
        with app.app_context():
            start.wait()
            return 202 if scheduled_run.run() else 500

    with ThreadPoolExecutor(max_workers=11) as pool:
        codes = [f.result() for f in [pool.submit(post) for _ in range(10)] + [pool.submit(tick)]]
    with app.app_context():
        run_ids = db.session.execute(select(Run.id).order_by(Run.id)).scalars().all()
    for run_id in run_ids:
        wait_for_run(app, run_id)

    assert set(codes) <= {200, 202} and codes.count(202) >= 1
    assert quote_count(app) == 2 * 28
    with app.app_context():
        parts = db.session.execute(select(SourceRun).order_by(SourceRun.source, SourceRun.id)).scalars().all()
        assert sum(p.inserted for p in parts) == 2 * 28
        for earlier, later in zip(parts, parts[1:]):
            if earlier.source == later.source:
                assert later.started_at >= earlier.finished_at, "two runs of one source overlapped"


def test_the_database_refuses_a_second_active_run_of_a_source(app: Flask, daily: Path) -> None:
    with app.app_context():
        runs.create_run(db.session, "cli", catalog.select_sources(app.config, None))
        db.session.commit()
        # Bypassing the trigger's lock and checks: a second run whose part names the same source.
        other = Run(trigger="cli", status="queued", sources=["daily"], config={})
        other.source_runs = [SourceRun(source="daily", status="queued")]
        db.session.add(other)
        with pytest.raises(IntegrityError, match="ix_run_sources_active_source"):
            db.session.commit()
