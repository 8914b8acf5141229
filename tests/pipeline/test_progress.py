"""Live progress: a running run's /runs/<id> shows batches and rows growing, its stage and an ETA (real worker)."""
from __future__ import annotations

import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from kasparro.tasks import enqueue_run
from tests.conftest import wait_for_run
from tests.pipeline.helpers import HEADER, csv_spec, declare

pytestmark = pytest.mark.usefixtures("worker")

ROWS = 20_000  # 200 batches at the test worker's BATCH_SIZE of 100


def write_large_csv(path: Path, rows: int) -> int:
    """Write `rows` distinct quotes; return the bytes after the header (what the read covers)."""
    first = date(2015, 1, 1)
    with path.open("w") as handle:
        handle.write(HEADER)
        for n in range(rows):
            handle.write(f"coin{n % 50},{first + timedelta(days=n // 50)},{100 + n % 997}.5,{n},{n * 10}\n")
    return path.stat().st_size - len(HEADER)


def poll_while_running(app: Flask, run_id: int, timeout: float = 240) -> list[dict[str, Any]]:
    """Read /runs/<id> every 0.2 s until the run finishes; return each running snapshot of its one source."""
    client, seen = app.test_client(), []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/runs/{run_id}").get_json()["data"]
        if body["status"] not in ("queued", "running"):
            return seen
        (source_run,) = body["source_runs"]
        if source_run["status"] == "running":
            seen.append(source_run)
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish within {timeout}s")


def test_a_running_csv_run_shows_batches_rows_stage_and_eta_growing(app: Flask, sources_file: Path,
                                                                    tmp_path: Path) -> None:
    path = tmp_path / "large.csv"
    to_read = write_large_csv(path, ROWS)
    declare(sources_file, {"large": csv_spec(path)})
    with app.app_context():
        run_id = enqueue_run("cli", ["large"]).run.id

    running = poll_while_running(app, run_id)
    wait_for_run(app, run_id)
    (final,) = app.test_client().get(f"/runs/{run_id}").get_json()["data"]["source_runs"]

    read = [s for s in running if s["progress"]["done"]]
    assert len(read) >= 3, f"only {len(read)} snapshots while reading"
    batches = [s["progress"]["batches_extracted"] for s in read]
    rows = [s["extracted"] for s in read]
    assert batches == sorted(batches) and batches[-1] > batches[0]
    assert rows == sorted(rows) and rows[-1] > rows[0]
    assert {s["progress"]["stage"] for s in read} <= {"extract", "transform", "load"}
    assert all(s["progress"]["unit"] == "bytes" and s["progress"]["total"] == to_read for s in read)
    etas = [s["progress"]["eta_seconds"] for s in read]
    assert all(isinstance(eta, float) and eta >= 0 for eta in etas)
    assert any(eta > 0 for eta in etas)
    assert (final["status"], final["extracted"], final["loaded"]) == ("success", ROWS, ROWS)
    assert final["progress"]["stage"] == "done" and final["progress"]["eta_seconds"] is None
    assert (final["progress"]["done"], final["progress"]["percent"]) == (to_read, 100.0)
    assert final["progress"]["batches_loaded"] == ROWS // 100
