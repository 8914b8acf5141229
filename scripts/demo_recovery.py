"""Show recovery on the running `make run` stack: a failed load resumes from its checkpoint, a killed worker's
source is resumed by the reaper, and the totals equal a clean load (no duplicates, no gaps).

Run with `make demo-recovery` while `make run` is up. It uses its own source
(`demo_recovery`, a copy of a shipped CSV under var/demo/) and its own queue,
so the stack's sources are untouched; its workers inject faults through
FAULT_INJECTION (see kasparro/pipeline/faults.py).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
SOURCE = "demo_recovery"
QUEUE = "kasparro-demo"
DEMO_DIR = ROOT / "var" / "demo"
SOURCES = f"""[sources.{SOURCE}]
kind = "csv"
path = "var/demo/recovery.csv"
date_format = "%Y-%m-%d"
settle_seconds = 0
[sources.{SOURCE}.columns]
source_asset_id = "currency"
observed_at = "date"
price_usd = "close"
volume_24h_usd = "volume"
market_cap_usd = "market_cap"
"""
# Every worker this demo started, so none outlives it whatever happens.
STARTED: list[subprocess.Popen] = []
SETTINGS = {"TASK_QUEUE": QUEUE, "SOURCES_FILE": str(DEMO_DIR / "sources.toml"), "BATCH_SIZE": "25"}


def say(message: str) -> None:
    print(f"\n== {message}", flush=True)


def start_worker(app: Any, name: str, fault: str = "") -> subprocess.Popen:
    """Start a worker on a queue of its own, where the next runs go, injecting `fault` if given.

    A queue per worker: a worker still shutting down can never take the next step's tasks.
    """
    queue = f"{QUEUE}-{name}"
    app.extensions["celery"].conf.task_default_queue = queue
    # A demo for `make run`: development unless the shell says otherwise (production then refuses the fault).
    env = {"APP_ENV": "development", **os.environ, **SETTINGS, "TASK_QUEUE": queue, "FAULT_INJECTION": fault}
    log = open(DEMO_DIR / f"{name}.log", "wb")
    command = [sys.executable, "-m", "celery", "-A", "kasparro.worker", "worker", "-Q", queue, "-c", "2",
               "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "--loglevel=INFO"]
    print(f"   worker {name} started" + (f" with FAULT_INJECTION={fault}" if fault else ""), flush=True)
    worker = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    STARTED.append(worker)
    return worker


def stop_worker(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)


def enqueue(app: Any) -> int:
    from kasparro.tasks import enqueue_run

    with app.app_context():
        start = enqueue_run("cli", [SOURCE])
        print(f"   run {start.run.id} queued", flush=True)
        return start.run.id


def row(app: Any, sql: str, **params: Any) -> Any:
    from kasparro.db import db

    with app.app_context():
        found = db.session.execute(text(sql), params).first()
        db.session.commit()
        return found


def wait_for(app: Any, run_id: int, statuses: tuple[str, ...], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = row(app, "SELECT status FROM run_sources WHERE run_id = :r", r=run_id)[0]
        if status in statuses:
            return status
        time.sleep(0.5)
    raise SystemExit(f"run {run_id} did not reach {statuses} within {timeout:.0f}s")


def show(app: Any, run_id: int) -> None:
    """Print a source run's status and counters, the source's totals and the run's events."""
    part = row(app, "SELECT status, stage, extracted, loaded, rejected, duplicates, error FROM run_sources "
               "WHERE run_id = :r", r=run_id)
    totals = row(app, "SELECT count(*), count(DISTINCT (asset_id, observed_at)) FROM market_quotes "
                 "WHERE source = :s", s=SOURCE)
    checkpoint = row(app, "SELECT cursor->>'line' FROM checkpoints WHERE source = :s", s=SOURCE)
    print(f"   run {run_id}: {part.status}{'/' + part.stage if part.stage else ''}, extracted {part.extracted}, "
          f"loaded {part.loaded}, rejected {part.rejected}, duplicates {part.duplicates}"
          + (f"\n   error: {part.error}" if part.error else ""))
    print(f"   {SOURCE}: {totals[0]} quotes ({totals[1]} distinct), checkpoint at line "
          f"{checkpoint[0] if checkpoint else '-'}")
    from kasparro.db import db

    with app.app_context():
        for kind, detail in db.session.execute(text("SELECT kind, detail FROM run_events WHERE run_id = :r "
                                                    "ORDER BY id"), {"r": run_id}):
            print(f"   [{kind}] {detail}")


def reset(app: Any) -> None:
    """Forget the demo source's earlier data, so each demo starts from an empty table."""
    from kasparro.db import db

    with app.app_context():
        for sql in ("DELETE FROM market_quotes WHERE source = :s", "DELETE FROM rejected_records WHERE source = :s",
                    "DELETE FROM quote_stage WHERE source = :s", "DELETE FROM raw_records WHERE source = :s",
                    "DELETE FROM checkpoints WHERE source = :s", "DELETE FROM source_leases WHERE source = :s",
                    "DELETE FROM runs WHERE :s = ANY(sources)"):
            db.session.execute(text(sql), {"s": SOURCE})
        db.session.commit()


def main() -> None:
    """Run the demo, then stop every worker it started, even when a step fails."""
    try:
        demo()
    finally:
        for worker in STARTED:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)


def demo() -> None:
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    (DEMO_DIR / "sources.toml").write_text(SOURCES)
    shutil.copyfile(ROOT / "data" / "csv" / "coins_daily_2019.csv", DEMO_DIR / "recovery.csv")
    os.environ.update(SETTINGS)
    from kasparro import create_app

    app = create_app()
    try:
        row(app, "SELECT 1")
    except Exception as exc:  # noqa: BLE001 - explain and stop: the stack is not up
        raise SystemExit(f"cannot reach the database ({exc.__class__.__name__}); start the stack with `make run`")

    say("0. a clean load, for reference")
    reset(app)
    worker = start_worker(app, "demo-clean")
    wait_for(app, enqueue(app), ("success", "partial"), 120)
    expected = row(app, "SELECT count(*) FROM market_quotes WHERE source = :s", s=SOURCE)[0]
    stop_worker(worker)
    print(f"   a clean load gives {expected} quotes")

    say("1. the load fails after 100 records (FAULT_INJECTION ...:load:100:raise)")
    reset(app)
    worker = start_worker(app, "demo-faulty", f"{SOURCE}:load:100:raise")
    first = enqueue(app)
    wait_for(app, first, ("failed",), 120)
    show(app, first)
    stop_worker(worker)
    say("   a fresh worker and the next run resume from the checkpoint")
    worker = start_worker(app, "demo-fresh")
    second = enqueue(app)
    wait_for(app, second, ("success", "partial"), 120)
    show(app, second)
    stop_worker(worker)
    check(app, expected)

    say("2. the whole worker process dies mid-load (FAULT_INJECTION ...:load:100:exit)")
    reset(app)
    worker = start_worker(app, "demo-doomed", f"{SOURCE}:load:100:exit")
    third = enqueue(app)
    worker.wait(timeout=120)
    print(f"   worker exited with {worker.returncode} (killed)")
    show(app, third)
    say("   a fresh worker starts; the stack's reaper resumes the source once the dead worker's lease lapses")
    worker = start_worker(app, "demo-replacement")
    started = time.monotonic()
    wait_for(app, third, ("success", "partial"), 240)
    print(f"   resumed and finished {time.monotonic() - started:.0f}s after the replacement started")
    show(app, third)
    stop_worker(worker)
    check(app, expected)


def check(app: Any, expected: int) -> None:
    """Compare the source's quotes with a clean load's count, and check none is doubled."""
    total, distinct = row(app, "SELECT count(*), count(DISTINCT (asset_id, observed_at)) FROM market_quotes "
                          "WHERE source = :s", s=SOURCE)
    verdict = "OK" if total == distinct == expected else "MISMATCH"
    print(f"   {verdict}: {total} quotes, {distinct} distinct, a clean load gives {expected}", flush=True)
    if verdict != "OK":
        raise SystemExit(1)


if __name__ == "__main__":
    main()
