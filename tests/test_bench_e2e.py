"""`python -m bench --e2e` on a small file: the whole stack of `make run` starts, every run is triggered and
followed over HTTP, every count checks, and nothing it made is left behind."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import redis
from sqlalchemy import create_engine, text

from tests.conftest import DATABASE_URL, ROOT, redis_db

SERVER = DATABASE_URL.rpartition("/")[0]
# A Redis database of its own: beat's heartbeat keys have fixed names, and the suite's /health tests read them.
BROKER = redis_db(12)


def test_e2e_bench_loads_through_the_api_and_cleans_up(tmp_path: Path) -> None:
    env = {**os.environ, "BENCH_DATABASE_SERVER": SERVER, "BENCH_BROKER_URL": BROKER}
    result = subprocess.run([sys.executable, "-m", "bench", "--e2e", "--rows", "2000", "--repeat", "1", "--copies",
                             "1", "--results", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=400)
    out = result.stdout + result.stderr

    assert result.returncode == 0, out[-6000:]
    assert "OK: every run succeeded and every count matched" in out
    for figure in ("first load vs \\copy", "unchanged re-run, % of first", "appended run, % of first",
                   "rejected s/row over loaded s/row"):
        assert figure in out, out[-4000:]
    [path] = tmp_path.glob("e2e-result-*.json")
    runs = json.loads(path.read_text())["cells"][0]["repeats"][0]["results"]
    assert [(r["label"], r["status"]) for r in runs] == [
        ("first load", "success"), ("unchanged re-run", "success"), ("+1% appended", "success"),
        ("all rows rejected", "partial")]
    assert runs[0]["counts"]["inserted"] == 2000 and runs[3]["counts"]["rejected"] == 2020
    assert all(r["post_s"] > 0 and r["started_s"] is not None and r["stages"] for r in runs)

    # Nothing the run made is left: its database (named in its output) and its queue's and worker's keys.
    [database] = re.findall(r"database (kasparro_bench_e2e\S+) built", out)
    engine = create_engine(f"{SERVER}/postgres")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": database}).all() == []
    engine.dispose()
    client = redis.Redis.from_url(BROKER)
    tag = database.removeprefix("kasparro_")
    assert list(client.scan_iter(f"*{tag.replace('_', '-', 1)}*")) == []
    client.close()
