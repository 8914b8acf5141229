"""`python -m bench --e2e --grow N`: the table grows step by step through the whole stack; each step's load is
checked and timed, and every read a dashboard makes answers after it, a page from the middle of the table too."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import DATABASE_URL, ROOT, redis_db

SERVER = DATABASE_URL.rpartition("/")[0]
READS = {"/data first page", "/data oldest page", "/data one coin", "/data/latest", "/stats", "/sources",
         "/data middle page"}


def test_each_step_loads_the_appended_rows_and_every_read_is_timed_after_it(tmp_path: Path) -> None:
    # --monthly: after each step the partition pass moves the step's rows into their months (3,000 rows of the
    # bench file span about ten months, each step's further back); the bench fails if any is left in DEFAULT.
    env = {**os.environ, "BENCH_DATABASE_SERVER": SERVER, "BENCH_BROKER_URL": redis_db(12)}
    result = subprocess.run([sys.executable, "-m", "bench", "--e2e", "--grow", "2", "--monthly", "--rows", "3000",
                             "--copies", "1", "--results", str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                            text=True, stdin=subprocess.DEVNULL, timeout=400)
    out = result.stdout + result.stderr

    assert result.returncode == 0, out[-6000:]
    assert "OK: every step loaded every appended row, and every read answered 200" in out
    assert "goal: every load within 1.3x of the first" in out and "goal: every read under 50 ms" in out
    [path] = tmp_path.glob("grow-result-*.json")
    growth = json.loads(path.read_text())["cells"][0]["repeats"][0]
    steps = growth["steps"]
    # The first pass moves every row (no month of the file had a partition); later steps' rows of a month that
    # has one by then go straight into it, the rest wait in DEFAULT for the pass.
    moved = [done["moved"] for done in growth["partitioned"]]
    assert moved[0] == 3000 and all(0 < rows < 3000 for rows in moved[1:]), moved
    made = [done["partitions"] for done in growth["partitioned"]]
    assert made[0] >= 5 and min(made) >= 1, made
    assert [(s["rows"], s["total"], s["status"]) for s in steps] == [(3000, 3000, "success"), (3000, 6000, "success"),
                                                                     (3000, 9000, "success")]
    assert all(set(s["reads_ms"]) == READS and min(s["reads_ms"].values()) > 0 for s in steps)
