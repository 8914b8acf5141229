"""Real faults on a private stack: whole workers killed, PostgreSQL and Redis restarted mid-run.

Each test breaks something for real, lets the system recover the way it would
in production (a fresh worker, the reaper), and then checks the final tables
against the file: every row once, with its exact values, and the checkpoint at
the end of the file. Nothing lost, nothing doubled.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from tests.faults.stack import QUEUE, ROOT, Stack, Worker
from tests.faults.test_stack import write_quotes
from tests.pipeline.helpers import csv_spec

FAST = {"LEASE_SECONDS": "3", "WORKER_LIVENESS_TTL_SECONDS": "2", "STALLED_AFTER_SECONDS": "8",
        "TASK_BACKOFF_BASE_SECONDS": "0.1", "TASK_BACKOFF_CAP_SECONDS": "2"}


def empty(stack: Stack) -> None:
    """Kill every worker and empty the database and Redis (started again if an earlier test left one stopped)."""
    for worker in stack.workers:  # an earlier test's worker would take this test's tasks
        worker.kill()
    for server in (stack.postgres, stack.redis):
        if not server.running:  # a test that failed while its outage lasted: its failure is its own
            server.start()
    tables = [row.tablename for row in stack.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                                                 "AND tablename <> 'alembic_version'")]
    stack.sql(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    redis.Redis.from_url(stack.redis.url).flushall()


@pytest.fixture
def quotes(stack: Stack, tmp_path: Path) -> Path:
    """A 3,000-row CSV declared as the only source, on an empty database and an empty Redis, with no worker."""
    empty(stack)
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


def resume_until_done(stack: Stack, run_id: int, timeout: float = 120) -> tuple[str, set[int]]:
    """Run the reaper as beat would (every 2 s here) until the run is final; return its status and what it resent."""
    deadline = time.monotonic() + timeout
    resent: set[int] = set()
    while time.monotonic() < deadline:
        status = stack.sql("SELECT status FROM runs WHERE id = :r", r=run_id)[0].status
        if status in ("success", "partial", "failed"):
            return status, resent
        reaped = stack.etl("reap", **FAST)
        # `etl reap` names the source runs whose chains it sent again: "resumed 1 source run(s): 1".
        found = re.search(r"^resumed \d+ source run\(s\): ([\d, ]+)$", reaped.stdout, re.M)
        resent |= {int(part) for part in found.group(1).split(",")} if found else set()
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
    """Start a worker and a run of small batches; return once five batches are written.

    Batches of 5 lines make the run about 600 of them, so it lasts long enough for the test to act mid-run
    on a loaded machine: with 60 batches a run finished within the moment the test took to look.
    """
    worker = stack.start_worker(BATCH_SIZE="5", **{**FAST, **env})
    run_id = stack.queue_run()
    deadline = time.monotonic() + 60
    while stack.sql("SELECT count(*) AS n FROM raw_batches")[0].n < 5:
        assert time.monotonic() < deadline, worker.log()[-3000:]
        time.sleep(0.05)
    return worker, run_id


@dataclass(frozen=True)
class AtDeath:
    """What the tables and the dead worker's log showed when the worker died."""

    # The fault rule that fired, from the worker's last words: the step it names and how many records had
    # been written when it fired; and the task it fired in (the line's `stage=`, bound by every stage task).
    # The rule names where it should fire; the task and the tables show where it did.
    fired_in: str
    fired_after: int
    task: str
    status: str
    stage: str | None
    extract_done: bool
    raw_lines: int     # lines of the file in the raw layer
    loaded: int        # quotes in market_quotes
    batches: dict[str, int]  # raw batches by state

    @classmethod
    def read(cls, stack: Stack, worker: Worker) -> AtDeath:
        """Read the dead worker's fault line and the tables it left."""
        fired = re.search(r"injected fault: (\w+) of history after (\d+) records \(exit\).*\bstage=(\w+)",
                          worker.log())
        assert fired, f"the worker died of something else:\n{worker.log()[-3000:]}"
        part = stack.sql("SELECT status, stage, extract_done FROM run_sources")[0]
        raw = stack.sql("SELECT (SELECT coalesce(sum(records), 0) FROM raw_chunks)"
                        " + (SELECT count(*) FROM raw_records) AS n")[0].n
        states = {row.state: row.n for row in stack.sql("SELECT state, count(*) AS n FROM raw_batches GROUP BY 1")}
        return cls(fired.group(1), int(fired.group(2)), fired.group(3), part.status, part.stage, part.extract_done, int(raw),
                   stack.sql("SELECT count(*) AS n FROM market_quotes")[0].n, states)


ROWS = 3000  # write_quotes: 10 coins x 300 days


def died_mid_extract(death: AtDeath) -> None:
    # In the extract task, with part of the file read and none of it past the end.
    assert (death.fired_in, death.task, death.stage, death.extract_done) == ("extract", "extract", "extract", False), \
        death
    assert 0 < death.raw_lines < ROWS, death


def died_between_transform_and_load(death: AtDeath) -> None:
    # In a load task, with the whole file read and transformed, and not one row loaded.
    assert (death.fired_in, death.fired_after, death.task, death.extract_done) == ("load", 0, "load", True), death
    assert death.raw_lines == ROWS and death.loaded == 0, death
    assert death.batches == {"transformed": 1}, death


def died_mid_load(death: AtDeath, task: str) -> None:
    # Loading, in `task`, with some rows of the file in market_quotes and some not.
    assert (death.fired_in, death.task) == ("load", task) and death.fired_after >= 1000, death
    assert 0 < death.loaded < ROWS, death


def died_mid_load_in_transform(death: AtDeath) -> None:
    died_mid_load(death, "transform")  # a raw chunk loads within its transform (LOAD_IN_TRANSFORM)


def died_mid_load_from_staging(death: AtDeath) -> None:
    died_mid_load(death, "load")  # every batch is staged and a load task loads it


@pytest.mark.parametrize(("batch_size", "fault", "load_in_transform", "died_where_named"), [
    pytest.param("250", "history:extract:1000:exit", "true", died_mid_extract, id="mid-extract"),
    # One batch, always staged: the worker dies once it is transformed, before any of it loads.
    pytest.param("5000", "history:load:0:exit", "false", died_between_transform_and_load,
                 id="between transform and load"),
    # Raw chunks next in order load within their transform: the worker dies after 1,000 rows of that.
    pytest.param("250", "history:load:1000:exit", "true", died_mid_load_in_transform, id="mid-load"),
    pytest.param("250", "history:load:1000:exit", "false", died_mid_load_from_staging, id="mid-load from staging"),
])
def test_a_whole_worker_killed_is_resumed_by_a_fresh_one_with_exact_tables(
        stack: Stack, quotes: Path, batch_size: str, fault: str, load_in_transform: str,
        died_where_named: Callable[[AtDeath], None]) -> None:
    doomed = stack.start_worker(BATCH_SIZE=batch_size, FAULT_INJECTION=fault, LOAD_IN_TRANSFORM=load_in_transform,
                                **FAST)
    run_id = stack.queue_run()
    wait_dead(doomed)
    death = AtDeath.read(stack, doomed)
    # The replacement comes once the dead worker is known dead (its liveness key expired): a takeover
    # sooner than that cannot tell a dead holder from a live peer, so it records no interruption.
    time.sleep(float(FAST["WORKER_LIVENESS_TTL_SECONDS"]) + 0.5)

    stack.start_worker(BATCH_SIZE=batch_size, LOAD_IN_TRANSFORM=load_in_transform, **FAST)
    status, _ = resume_until_done(stack, run_id)

    assert death.status == "running", doomed.log()[-6000:]
    died_where_named(death)
    assert status == "success", stack.sql("SELECT error FROM run_sources")
    # Resumed by the reaper, or taken over by the fresh worker from a message still queued: either way
    # the history shows the interruption and the recovery.
    assert events(stack, run_id)[:2] == ["interrupted", "resumed"]
    assert_equals_a_clean_load(stack, quotes)


def in_flight(stack: Stack) -> dict[str, int]:
    """Return what the run has in the database now: its part's status and stage, batches written, rows loaded."""
    part = stack.sql("SELECT status, stage, extract_done FROM run_sources")[0]
    return {"status": part.status, "stage": part.stage, "extract_done": part.extract_done,
            "batches": stack.sql("SELECT count(*) AS n FROM raw_batches")[0].n,
            "loaded": stack.sql("SELECT count(*) AS n FROM market_quotes")[0].n}


def test_postgres_restarting_mid_run_ends_with_the_tables_of_a_clean_load(stack: Stack, quotes: Path) -> None:
    worker, run_id = start_mid_run(stack)
    offset = len(worker.log())

    before = in_flight(stack)
    stack.postgres.stop("immediate")
    stopped_at = time.monotonic()
    # The worker was at work when the database went: it meets the outage (a retry or a failure that
    # cannot be recorded), rather than having finished already.
    while not re.search(r"retrying in|the reaper will resume it", worker.log()[offset:]):
        assert time.monotonic() - stopped_at < 30, f"the worker never met the outage:\n{worker.log()[-3000:]}"
        time.sleep(0.1)
    time.sleep(max(0.0, 3 - (time.monotonic() - stopped_at)))  # the outage lasts 3 s at least
    stack.postgres.start()
    after = in_flight(stack)
    status, _ = resume_until_done(stack, run_id)

    # Mid-run: batches read and the run not finished (on a loaded machine it may be past its extract, or
    # loading its last batches, by then); the worker's log above shows it was at work when the database went.
    assert before["status"] == "running" and before["batches"] >= 5, before
    assert after["status"] == "running", after  # still unfinished once PostgreSQL was back
    # The run that was interrupted is the one that finishes: no other run was started to make up for it.
    assert status == "success", (stack.sql("SELECT error FROM run_sources"), worker.log()[-3000:])
    assert [row.id for row in stack.sql("SELECT id FROM runs")] == [run_id]
    assert_equals_a_clean_load(stack, quotes)


def broker_messages(stack: Stack) -> dict[str, str]:
    """Return the task messages the broker holds, queued or delivered and unacknowledged: id -> task name."""
    client = redis.Redis.from_url(stack.redis.url)
    queued = [json.loads(body) for body in client.lrange(QUEUE, 0, -1)]
    unacked = [json.loads(entry)[0] for entry in client.hvals("unacked")]
    return {message["headers"]["id"]: message["headers"]["task"] for message in queued + unacked}


def stopped_with_a_stage_waiting(stack: Stack, attempts: int = 3) -> tuple[Worker, int, dict[str, str]]:
    """Start a run, make its worker stop taking messages, and return once the run's next stage waits in Redis.

    The worker finishes what it holds first; on a loaded machine that can be the whole run (the request to
    stop taking messages is answered after it), which leaves nothing in the broker to lose: the run is then
    made again from empty tables, up to `attempts` times.
    """
    for _ in range(attempts):
        worker, run_id = start_mid_run(stack)
        # Every worker busy elsewhere, as far as this queue goes: the worker finishes what it holds, and
        # the rest of the run (the chain's next stage) waits in the broker, where a restart loses it.
        stack.consume(worker, on=False)
        deadline = time.monotonic() + 180
        while stack.holds(worker) or not in_flight(stack)["extract_done"]:
            assert time.monotonic() < deadline, worker.log()[-3000:]
            time.sleep(0.2)
        waiting = broker_messages(stack)
        if in_flight(stack)["status"] == "running":
            return worker, run_id, waiting
        empty(stack)
    raise AssertionError(f"the run finished before its worker stopped taking messages, {attempts} times")


def test_redis_restarting_mid_run_loses_queued_messages_and_the_reaper_resends_them(
        stack: Stack, quotes: Path) -> None:
    worker, run_id, waiting = stopped_with_a_stage_waiting(stack)
    source_run_id = stack.sql("SELECT id FROM run_sources")[0].id
    stack.redis.stop("immediate")  # it keeps nothing on disk: queued and unacknowledged messages are gone
    time.sleep(2)
    stack.redis.start()
    left = broker_messages(stack)
    stack.consume(worker, on=True)
    status, resent = resume_until_done(stack, run_id, timeout=180)

    # The run's next stage was in the broker: the chain's transform, or the loads of batches transformed
    # meanwhile (which it is depends on how far the run got before the worker stopped taking messages).
    assert {"kasparro.tasks.transform", "kasparro.tasks.load"} & set(waiting.values()), waiting
    assert not waiting.keys() & left.keys(), left                    # and none of it came back
    assert in_flight(stack)["status"] == "success" and source_run_id in resent, resent  # the reaper resent it
    assert events(stack, run_id)[:2] == ["interrupted", "resumed"]
    assert status == "success", worker.log()[-3000:]
    assert_equals_a_clean_load(stack, quotes)


def test_a_database_outage_longer_than_the_retries_is_recorded_and_resumed(stack: Stack, quotes: Path) -> None:
    worker, run_id = start_mid_run(stack, TASK_MAX_RETRIES="1")

    stack.postgres.stop("immediate")
    deadline = time.monotonic() + 30
    while "the reaper will resume it" not in worker.log():
        assert time.monotonic() < deadline, worker.log()[-3000:]
        time.sleep(0.2)
    stack.postgres.start()
    status, _ = resume_until_done(stack, run_id)

    assert status == "success", worker.log()[-3000:]
    details = [row.detail for row in stack.sql("SELECT detail FROM run_events WHERE kind = 'interrupted'")]
    assert any("database was unreachable" in detail for detail in details), details
    assert_equals_a_clean_load(stack, quotes)


def test_connections_lost_past_the_retries_are_resumed_even_when_the_database_is_back_at_once(
        stack: Stack, quotes: Path) -> None:
    # The outage above ends while a task gives up or after: which one was a race, and when the database
    # was back first the run used to be failed. Here it is back at once: the server cuts the worker's
    # connections mid-statement (as a failover or an operator's restart does) and keeps accepting new ones.
    worker, run_id = start_mid_run(stack, TASK_MAX_RETRIES="0")
    deadline = time.monotonic() + 60
    while "the reaper will resume it" not in worker.log():
        assert time.monotonic() < deadline, worker.log()[-3000:]
        stack.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                  "AND pid <> pg_backend_pid() AND state = 'active'")
        time.sleep(0.05)
    status, resent = resume_until_done(stack, run_id)

    assert "gave up while the database was unreachable" in worker.log(), worker.log()[-3000:]
    assert status == "success" and resent, (stack.sql("SELECT error FROM run_sources"), worker.log()[-3000:])
    assert [row.id for row in stack.sql("SELECT id FROM runs")] == [run_id]  # the same run, resumed
    assert "interrupted" in events(stack, run_id)
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
