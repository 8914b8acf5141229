"""The private stack runs a real pipeline end to end and survives killed workers and restarted servers."""
from __future__ import annotations

import random
from datetime import date, timedelta
from pathlib import Path

import redis

from tests.faults.stack import Stack
from tests.pipeline.helpers import HEADER, csv_spec

COINS = {"btc": 30_000.0, "eth": 2_000.0, "sol": 100.0, "ada": 0.5, "xrp": 0.6, "doge": 0.08, "dot": 6.0,
         "ltc": 80.0, "link": 7.0, "matic": 0.9}
DAYS = 300


def write_quotes(path: Path, seed: int = 7) -> int:
    """Write a CSV of daily quotes following a random walk per coin; return the number of rows."""
    rng = random.Random(seed)
    rows = 0
    with path.open("w") as handle:
        handle.write(HEADER)
        for coin, price in COINS.items():
            for day in range(DAYS):
                price *= 1 + rng.gauss(0, 0.03)
                volume = price * rng.uniform(1e5, 1e7)
                supply = {"btc": 19.5e6, "eth": 120e6}.get(coin, 1e9)
                observed = date(2023, 1, 1) + timedelta(days=day)
                handle.write(f"{coin},{observed.isoformat()},{price:.6f},{volume:.2f},{price * supply:.2f}\n")
                rows += 1
    return rows


def test_a_run_loads_every_row_and_a_killed_worker_is_replaced(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "quotes.csv"
    rows = write_quotes(path)
    stack.write_sources({"history": csv_spec(path)})
    worker = stack.start_worker()

    done = stack.etl("run", "--wait", "--timeout", "120")

    assert done.returncode == 0, done.stdout + done.stderr + worker.log()[-4000:]
    assert stack.sql("SELECT status FROM runs")[0].status == "success"
    assert stack.sql("SELECT count(*) AS n FROM market_quotes WHERE source = 'history'")[0].n == rows

    pool = worker.pool_pids()
    worker.kill()
    assert not worker.pool_pids() and pool
    fresh = stack.start_worker()
    assert stack.ping(fresh) and not stack.ping(worker)


def test_after_a_redis_restart_a_new_worker_takes_new_runs(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "small.csv"
    path.write_text(HEADER + "btc,2024-01-01,42000.5,1000,800000000000\n")
    stack.write_sources({"small": csv_spec(path)})
    port = stack.redis.port

    stack.redis.restart("immediate")
    for worker in stack.workers:
        worker.kill()
    worker = stack.start_worker()
    run_id = stack.queue_run("small")

    assert stack.redis.port == port and redis.Redis.from_url(stack.redis.url).ping()
    assert stack.wait_for_run(run_id) == "success", worker.log()[-4000:]


def test_after_a_postgres_restart_sql_reconnects(stack: Stack) -> None:
    before = stack.sql("SELECT count(*) AS n FROM market_quotes")[0].n
    port = stack.postgres.port

    stack.postgres.restart("immediate")

    assert stack.postgres.port == port
    assert stack.sql("SELECT count(*) AS n FROM market_quotes")[0].n == before
