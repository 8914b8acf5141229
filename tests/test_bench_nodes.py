"""`python -m bench --nodes 2`: two worker processes started apart, as on two machines, share one run's work,
and the run still checks every count."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import DATABASE_URL, ROOT, redis_db

SERVER = DATABASE_URL.rpartition("/")[0]


def test_two_worker_nodes_both_take_tasks_of_one_run_and_every_count_checks(tmp_path: Path) -> None:
    env = {**os.environ, "BENCH_DATABASE_SERVER": SERVER, "BENCH_BROKER_URL": redis_db(12)}
    # 12 chunks of 500 lines: a task for each, so an idle node is seen, not guessed.
    result = subprocess.run([sys.executable, "-m", "bench", "--rows", "6000", "--workers", "1", "--nodes", "2",
                             "--batch-size", "500", "--copies", "1", "--skip-paging", "--results", str(tmp_path)],
                            cwd=ROOT, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=400)
    out = result.stdout + result.stderr

    assert result.returncode == 0, out[-6000:]
    assert "OK: every run succeeded and every count matched" in out
    assert "2 workers started apart (nodes), each -c 1" in out
    [path] = tmp_path.glob("result-*.json")
    [scenario] = json.loads(path.read_text())["cells"][0]["repeats"]
    assert len(scenario["node_tasks"]) == 2 and min(scenario["node_tasks"]) > 0, scenario["node_tasks"]
    assert scenario["results"][0]["counts"]["inserted"] == 6000
