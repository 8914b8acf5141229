"""A retried failure never carries what its error quoted: not in the retried task's kwargs, not in the log."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from celery._state import get_current_app
from flask import Flask

from kasparro import create_app
from kasparro.db import db
from kasparro.tasks import enqueue_run
from tests.conftest import ROOT, _worker_env, wait_for_run
from tests.conftest import test_config as config_for
from tests.pipeline.helpers import declare
from tests.pipeline.test_json_pipeline import drop_spec, tick, write_ndjson

PASSWORD, KEY = f"pw-{uuid.uuid4().hex[:10]}", f"key-{uuid.uuid4().hex[:10]}"
QUOTED_ERROR = (f"HTTPSConnectionPool: Max retries exceeded with url https://svc:{PASSWORD}@vendor.example"
                f"/v1/ticks?page=2&api_key={KEY} (Caused by ConnectionResetError) " + "x" * 2000)


@pytest.fixture
def quoting(app: Flask, sources_file: Path, tmp_path: Path) -> Iterator[tuple[Flask, Path, Path, Path]]:
    """An app and a real worker of their own queue, whose JSON sources fail once quoting a secret URL."""
    queue = f"kasparro-test-quoting-{uuid.uuid4().hex[:8]}"
    flag, published, log = tmp_path / "fail-once", tmp_path / "published.jsonl", tmp_path / "worker.log"
    env = {**_worker_env(sources_file), "TASK_QUEUE": queue, "QUOTING_FLAG": str(flag),
           "QUOTED_ERROR": QUOTED_ERROR, "PUBLISHED_LOG": str(published)}
    name = f"quoting-{uuid.uuid4().hex[:6]}@%h"
    command = [sys.executable, "-m", "celery", "-A", "tests.pipeline.secret_quoting_worker", "worker",
               "--loglevel=INFO", "-Q", queue, "-c", "1", "-n", name, "--without-gossip", "--without-mingle"]
    before: Celery = get_current_app()
    own = create_app({**config_for(sources_file), "TASK_QUEUE": queue})
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                   start_new_session=True)
    try:
        yield own, flag, published, log
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        with own.app_context():
            db.engine.dispose()
        before.set_current()
        before.set_default()


def logged_once(log: Path, *lines: str, timeout: float = 30) -> str:
    """Wait until the worker's log holds each of `lines` (it writes them after the database says done)."""
    deadline = time.monotonic() + timeout
    while not all(line in (logged := log.read_text(errors="replace")) for line in lines):
        assert time.monotonic() < deadline, f"the worker never logged all of {lines}:\n{logged[-3000:]}"
        time.sleep(0.05)
    return logged


def test_a_retry_whose_error_quotes_a_password_and_key_shows_neither(
        quoting: tuple[Flask, Path, Path, Path], sources_file: Path, tmp_path: Path) -> None:
    own, flag, published, log = quoting
    declare(sources_file, {"ticks": drop_spec(write_ndjson(tmp_path / "t.ndjson", [tick("bitcoin", 1, 42000.5)]))})
    flag.touch()

    with own.app_context():
        run_id = enqueue_run("cli", None).run.id
    run = wait_for_run(own, run_id, timeout=90)
    logged = logged_once(log, "retrying in", "succeeded in")  # the run's last task has logged its end

    sent = [json.loads(line) for line in published.read_text().splitlines()]
    retries = [m["kwargs"]["retry"] for m in sent if (m["kwargs"] or {}).get("retry")]
    assert run.status == "success" and not flag.exists()  # it failed once, was retried and then read
    assert len(retries) == 1 and retries[0]["after"].startswith("retry 1 after TransientSourceError: ")
    assert "https://svc:***@vendor.example/v1/ticks?page=2&api_key=***" in retries[0]["after"]
    assert len(retries[0]["after"]) <= 520
    assert "retrying in" in logged and "svc:***@vendor.example" in logged
    for secret in (PASSWORD, KEY):
        assert secret not in published.read_text() and secret not in logged


def test_a_failure_out_of_retries_whose_error_quotes_a_password_and_key_shows_neither(
        quoting: tuple[Flask, Path, Path, Path], sources_file: Path, tmp_path: Path) -> None:
    own, flag, published, log = quoting
    declare(sources_file, {"ticks": drop_spec(write_ndjson(tmp_path / "t.ndjson", [tick("bitcoin", 1, 42000.5)]))})
    flag.write_text("always")

    with own.app_context():
        run_id = enqueue_run("cli", None).run.id
    run = wait_for_run(own, run_id, timeout=90)
    logged = logged_once(log, "StageFailed: TransientSourceError: ")  # the worker's line for the failure
    (source_run,) = run.source_runs
    for secret in (PASSWORD, KEY):
        assert secret not in published.read_text() and secret not in logged and secret not in source_run.error
    assert run.status == "failed" and "svc:***@vendor.example" in source_run.error
    assert "StageFailed: TransientSourceError: " in logged  # what Celery logged the task raising
    assert "in pages" in logged  # where it came from is still told
