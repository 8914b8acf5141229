"""`make demo-recovery` against a newcomer's `make run`, in a second terminal, with no URL given.

The demo must find the servers `make run` started (only `var/local/servers.env` says where they are), inject
both faults for real (a load that fails part-way, a worker process that dies mid-load), and end with exactly
the quotes of a clean load: each valid row of the file once.
"""
from __future__ import annotations

import csv
import re
import subprocess
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from kasparro.embedded import free_port
from tests.newcomer import ROOT, copy_checkout, ctrl_c, newcomer_env, running_database_url, start, wait_for_api

DEMO_FILE = ROOT / "data" / "csv" / "coins_daily_2019.csv"
# Short lease and reaper period so the killed worker's source resumes in seconds, not the default minute or
# two; the production defaults only change how long the demo waits, not what it shows.
FAST_RECOVERY = {"LEASE_SECONDS": "10", "WORKER_LIVENESS_TTL_SECONDS": "5", "REAPER_INTERVAL_SECONDS": "2"}


def valid_rows(path: Path) -> set[tuple[str, str]]:
    """Return the (coin, day) of each row a clean load must keep, by a rule written here, not by our code.

    A row is kept when it has every column, a real date and a positive closing price.
    """
    kept = set()
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            if None in row.values() or not row["currency"]:
                continue
            try:
                date.fromisoformat(row["date"])
                close = float(row["close"])
            except ValueError:
                continue
            if close > 0:
                kept.add((row["currency"], row["date"]))
    return kept


def demo_quotes(database_url: str) -> tuple[int, int]:
    """Return the demo source's quote count and distinct (asset, time) count, read from the database itself."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return tuple(conn.execute(text("SELECT count(*), count(DISTINCT (asset_id, observed_at)) "
                                           "FROM market_quotes WHERE source = 'demo_recovery'")).one())
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield copy_checkout(tmp_path_factory.mktemp("demo") / "kasparro")


def test_demo_recovery_reaches_a_bare_machine_make_run_and_ends_with_each_valid_row_once(checkout: Path) -> None:
    expected = len(valid_rows(DEMO_FILE))
    ports = {name: free_port() for name in ("api", "flower", "upstream")}
    env, log = newcomer_env(ports, **FAST_RECOVERY), checkout / "make-run.log"
    stack = start(checkout, env, log)
    try:
        wait_for_api(f"http://127.0.0.1:{ports['api']}", stack, log)
        demo = subprocess.run(["make", "--no-print-directory", "demo-recovery"], cwd=checkout, env=env, text=True,
                              capture_output=True, stdin=subprocess.DEVNULL, timeout=300)
        stored = demo_quotes(running_database_url(checkout))
    finally:
        ctrl_c(stack, log)
    out = demo.stdout + demo.stderr
    assert demo.returncode == 0, out

    # The clean load, and both recoveries, print the file's valid rows, each once; the database agrees.
    assert f"a clean load gives {expected} quotes" in out, out
    assert out.count(f"OK: {expected} quotes, {expected} distinct, a clean load gives {expected}") == 2, out
    assert stored == (expected, expected)
    # Step 1 really failed part-way: some quotes were in, not all.
    failed = re.search(r"run \d+: failed, extracted \d+, loaded (\d+)", out)
    assert failed and 0 < int(failed.group(1)) < expected, out
    # Step 2 really lost its worker mid-load, and the stack's reaper (not the demo) resent the source.
    assert "worker exited with -9 (killed)" in out, out
    stalled = re.search(r"run \d+: running/\w+, extracted \d+, loaded (\d+)", out)
    assert stalled and 0 < int(stalled.group(1)) < expected, out
    assert "[resumed] resent by the reaper" in out, out
