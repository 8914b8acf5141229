"""A worker process killed mid-run loses nothing and doubles nothing: the message comes back and resumes."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import date, timedelta
from pathlib import Path

from flask import Flask
from sqlalchemy import func, select

from kasparro.db import db
from kasparro.models import Checkpoint, RawBatch, SourceRun
from kasparro.tasks import enqueue_run
from tests.conftest import wait_for_run
from tests.pipeline.activity import busy_pool_processes
from tests.pipeline.helpers import HEADER, csv_spec, declare, quote_count

ROWS = 15_000  # with the test worker's BATCH_SIZE=100: 150 batches, a few seconds of work


def pool_children(worker: subprocess.Popen) -> list[int]:
    """Return the pids of the worker's pool processes (its direct children)."""
    with open(f"/proc/{worker.pid}/task/{worker.pid}/children") as handle:
        return [int(pid) for pid in handle.read().split()]


def wait_until(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_a_pool_process_killed_mid_extract_is_replaced_and_the_run_completes_exactly(
        app: Flask, sources_file: Path, tmp_path: Path, worker: subprocess.Popen) -> None:
    path = tmp_path / "big.csv"
    with path.open("w") as handle:
        handle.write(HEADER)
        for i in range(ROWS):
            day = date(2015, 1, 1) + timedelta(days=i // 50)
            handle.write(f"coin{i % 50},{day.isoformat()},{1 + i % 997}.25,{i},{i * 10}\n")
    declare(sources_file, {"big": csv_spec(path)})
    with app.app_context():
        run = enqueue_run("cli").run
        run_id, source_run_id = run.id, run.source_runs[0].id

    def batches_written() -> int:
        with app.app_context():
            return db.session.execute(select(func.count()).select_from(RawBatch)
                                      .where(RawBatch.run_source_id == source_run_id)).scalar_one()

    wait_until(lambda: batches_written() >= 20)
    killed = pool_children(worker)
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    killed_at = batches_written()
    # A SIGKILL lands when the kernel gets to it: watch only once the worker has reaped both (a dying
    # process still holds its database session for a moment).
    wait_until(lambda: not set(killed) & set(pool_children(worker)))

    with busy_pool_processes(worker.pid) as samples:
        finished = wait_for_run(app, run_id, timeout=180)

    assert killed_at < ROWS // 100, "the kill came after the extract had finished"
    # New pool processes took the killed ones' places, and they (not a survivor) did the rest of the run.
    replacements = set(pool_children(worker))
    assert len(killed) == 2 and len(replacements) == 2 and not replacements & set(killed)
    worked = set().union(*samples)
    assert worked and not worked & set(killed), (killed, replacements, worked)
    assert finished.status == "success", [(s.status, s.error, s.extracted, s.inserted, s.rejected)
                                          for s in finished.source_runs]
    assert quote_count(app) == ROWS
    with app.app_context():
        source_run = db.session.get(SourceRun, source_run_id)
        assert (source_run.extracted, source_run.inserted, source_run.rejected) == (ROWS, ROWS, 0)
        assert db.session.get(Checkpoint, "big").cursor["offset"] == path.stat().st_size
