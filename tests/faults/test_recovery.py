"""Real faults on a private stack: whole workers killed, PostgreSQL and Redis restarted mid-run.

Each test breaks something for real, lets the system recover the way it would
in production (a fresh worker, the reaper), and then checks the final tables
against the file: every row once, with its exact values, and the checkpoint at
the end of the file. Nothing lost, nothing doubled.
"""
from __future__ import annotations

import subprocess
import sys
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from tests.faults.stack import ROOT, Stack, Worker
from tests.faults.test_stack import write_quotes
from tests.pipeline.helpers import csv_spec

FAST = {"LEASE_SECONDS": "3", "WORKER_LIVENESS_TTL_SECONDS": "2", "STALLED_AFTER_SECONDS": "8",
        "TASK_BACKOFF_BASE_SECONDS": "0.1", "TASK_BACKOFF_CAP_SECONDS": "2"}


@pytest.fixture
def quotes(stack: Stack, tmp_path: Path) -> Path:
    """A 3,000-row CSV declared as the only source, on an empty database and an empty Redis, with no worker."""
    for worker in stack.workers:  # an earlier test's worker would take this test's tasks
        worker.kill()
    tables = [row.tablename for row in stack.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                                                 "AND tablename <> 'alembic_version'")]
    stack.sql(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    redis.Redis.from_url(stack.redis.url).flushall()
    path = tmp_path / "quotes.csv"
    write_quotes(path)
    stack.write_sources({"history": csv_spec(path)})
    return path


def expected_rows(path: Path) -> set[tuple[str, date, Decimal, Decimal, Decimal]]:
    """Read the file as a clean load must store it."""
    rows = set()
    for line in path.read_text().splitlines()[1:]:
        coin, day, close, volume, cap = line.split(",")
        rows.add((coin, date.fromisoformat(day), Decimal(close), Decimal(volume), Decimal(cap)))
    return rows


def assert_equals_a_clean_load(stack: Stack, path: Path) -> None:
    """Check the tables hold each row of the file once, with its values, and the checkpoint is at its end."""
    stored = stack.sql("SELECT al.source_asset_id, (q.observed_at AT TIME ZONE 'UTC')::date AS day, q.price_usd, "
                       "q.volume_24h_usd, q.market_cap_usd FROM market_quotes q JOIN asset_aliases al "
                       "ON al.asset_id = q.asset_id AND al.source = q.source")
    assert len(stored) == len(set(map(tuple, stored))), "a quote was stored twice"
    assert set(map(tuple, stored)) == expected_rows(path)
    # The raw layer holds each line once: raw chunks whose line ranges do not overlap, and each quote's
    # lineage is a line of its own.
    raw = stack.sql("SELECT coalesce(sum(records), 0) AS lines, count(*) AS chunks FROM raw_chunks")[0]
    records = stack.sql("SELECT count(*) AS n FROM raw_records")[0].n
    overlaps = stack.sql("SELECT count(*) AS n FROM raw_chunks a JOIN raw_chunks b ON a.id < b.id"
                         " AND a.first_line < b.first_line + b.records AND b.first_line < a.first_line + a.records")
    lineage = stack.sql("SELECT count(DISTINCT (raw_chunk_id, raw_line, raw_record_id)) AS n FROM market_quotes")[0]
    assert raw.lines + records == len(stored) and overlaps[0].n == 0
    assert lineage.n == len(stored)
    assert stack.sql("SELECT cursor->>'offset' AS offset FROM checkpoints")[0].offset == str(path.stat().st_size)
    counted = stack.sql("SELECT sum(inserted) AS inserted, sum(rejected) AS rejected FROM run_sources")[0]
    assert (counted.inserted, counted.rejected) == (len(stored), 0)


def resume_until_done(stack: Stack, run_id: int, timeout: float = 120) -> str:
    """Run the reaper as beat would (every 2 s here) until the run is final; return its status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = stack.sql("SELECT status FROM runs WHERE id = :r", r=run_id)[0].status
        if status in ("success", "partial", "failed"):
            return status
        stack.etl("reap", **FAST)
        time.sleep(2)
    raise AssertionError(f"run {run_id} did not finish in {timeout}s")


def events(stack: Stack, run_id: int) -> list[str]:
    return [row.kind for row in stack.sql("SELECT kind FROM run_events WHERE run_id = :r ORDER BY id", r=run_id)]


def wait_dead(worker: Worker, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while worker.pool_pids() or worker.process.poll() is None:
        assert time.monotonic() < deadline, f"worker did not die:\n{worker.log()[-3000:]}"
        time.sleep(0.1)


def start_mid_run(stack: Stack, **env: str) -> tuple[Worker, int]:
    """Start a worker and a run of small batches; return once five batches are written."""
    worker = stack.start_worker(BATCH_SIZE="50", **{**FAST, **env})
    run_id = stack.queue_run()
    deadline = time.monotonic() + 60
    while stack.sql("SELECT count(*) AS n FROM raw_batches")[0].n < 5:
        assert time.monotonic() < deadline, worker.log()[-3000:]
        time.sleep(0.05)
    return worker, run_id


@pytest.mark.parametrize(("point", "batch_size", "fault", "load_in_transform"), [
    ("mid-extract", "250", "history:extract:1000:exit", "true"),
    # One batch, always staged: the worker dies once it is transformed, before any of it loads.
    ("between transform and load", "5000", "history:load:0:exit", "false"),
    # Raw chunks next in order load within their transform: the worker dies after 1,000 rows of that.
    ("mid-load", "250", "history:load:1000:exit", "true"),
    ("mid-load from staging", "250", "history:load:1000:exit", "false"),
])
def test_a_whole_worker_killed_is_resumed_by_a_fresh_one_with_exact_tables(
        stack: Stack, quotes: Path, point: str, batch_size: str, fault: str, load_in_transform: str) -> None:
    doomed = stack.start_worker(BATCH_SIZE=batch_size, FAULT_INJECTION=fault, LOAD_IN_TRANSFORM=load_in_transform,
                                **FAST)
    run_id = stack.queue_run()
    wait_dead(doomed)
    interrupted = stack.sql("SELECT status, stage FROM run_sources")[0]
    loaded_before = stack.sql("SELECT count(*) AS n FROM market_quotes")[0].n
    # The replacement comes once the dead worker is known dead (its liveness key expired): a takeover
    # sooner than that cannot tell a dead holder from a live peer, so it records no interruption.
    time.sleep(float(FAST["WORKER_LIVENESS_TTL_SECONDS"]) + 0.5)

    stack.start_worker(BATCH_SIZE=batch_size, LOAD_IN_TRANSFORM=load_in_transform, **FAST)
    status = resume_until_done(stack, run_id)

    assert "injected fault" in doomed.log()
    assert interrupted.status == "running", doomed.log()[-6000:]
    assert (point != "between transform and load") or (loaded_before == 0 and interrupted.stage != "extract")
    assert status == "success", stack.sql("SELECT error FROM run_sources")
    # Resumed by the reaper, or taken over by the fresh worker from a message still queued: either way
    # the history shows the interruption and the recovery.
    assert events(stack, run_id)[:2] == ["interrupted", "resumed"]
    assert_equals_a_clean_load(stack, quotes)


def test_postgres_restarting_mid_run_ends_with_the_tables_of_a_clean_load(stack: Stack, quotes: Path) -> None:
    worker, run_id = start_mid_run(stack)

    stack.postgres.stop("immediate")
    time.sleep(3)
    stack.postgres.start()
    status = resume_until_done(stack, run_id)
    if status != "success":  # failed cleanly: the next trigger resumes from the checkpoint
        status = stack.wait_for_run(stack.queue_run(), timeout=120)

    assert status == "success", worker.log()[-3000:]
    assert_equals_a_clean_load(stack, quotes)


def test_redis_restarting_mid_run_loses_queued_messages_and_the_reaper_resends_them(
        stack: Stack, quotes: Path) -> None:
    worker, run_id = start_mid_run(stack)

    stack.redis.stop("immediate")  # it keeps nothing on disk: queued and unacknowledged messages are gone
    time.sleep(2)
    stack.redis.start()
    status = resume_until_done(stack, run_id, timeout=180)

    assert status == "success", worker.log()[-3000:]
    assert_equals_a_clean_load(stack, quotes)


def test_a_database_outage_longer_than_the_retries_is_recorded_and_resumed(stack: Stack, quotes: Path) -> None:
    worker, run_id = start_mid_run(stack, TASK_MAX_RETRIES="1")

    stack.postgres.stop("immediate")
    deadline = time.monotonic() + 30
    while "could not be recorded" not in worker.log():
        assert time.monotonic() < deadline, worker.log()[-3000:]
        time.sleep(0.2)
    stack.postgres.start()
    status = resume_until_done(stack, run_id)

    assert status == "success", worker.log()[-3000:]
    details = [row.detail for row in stack.sql("SELECT detail FROM run_events WHERE kind = 'interrupted'")]
    assert any("database was unreachable" in detail for detail in details), details
    assert_equals_a_clean_load(stack, quotes)


def test_with_the_shipped_settings_a_dead_workers_source_resumes_within_two_minutes(
        stack: Stack, quotes: Path) -> None:
    doomed = stack.start_worker(BATCH_SIZE="250", FAULT_INJECTION="history:extract:500:exit",
                                LEASE_SECONDS="60", ETL_RUN_ON_START="false")
    run_id = stack.queue_run()
    wait_dead(doomed)
    died = time.time()
    stack.start_worker(BATCH_SIZE="250", LEASE_SECONDS="60")
    beat = subprocess.Popen([sys.executable, "-m", "celery", "-A", "kasparro.worker", "beat", "--loglevel=INFO",
                             "--schedule", str(stack.root / "beat-schedule")],
                            env=stack.env(LEASE_SECONDS="60", ETL_RUN_ON_START="false", ETL_INTERVAL_SECONDS="3600"),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert stack.wait_for_run(run_id, timeout=180) == "success"
    finally:
        beat.kill()
        beat.wait()
    resumed_at = stack.sql("SELECT extract(epoch FROM created_at) AS at FROM run_events WHERE kind = 'resumed'")[0].at

    print(f"resumed {float(resumed_at) - died:.1f}s after the worker died")
    assert float(resumed_at) - died < 120
    assert_equals_a_clean_load(stack, quotes)
