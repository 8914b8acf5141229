"""Shared fixtures: a throwaway database built by the migrations, the app, and a real Celery worker."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

# Tests never read a developer's .env.
os.environ["ENV_FILE"] = ""

from kasparro import create_app  # noqa: E402
from kasparro.db import db  # noqa: E402
from kasparro.migrate import drop_database, init_db  # noqa: E402
from kasparro.models import Run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SESSION_TAG = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
DATABASE_URL = os.environ.get("TEST_DATABASE_SERVER", "postgresql+psycopg2://postgres@127.0.0.1:5432") \
    + f"/kasparro_test_{SESSION_TAG}"
BROKER_URL = os.environ.get("TEST_BROKER_URL", "redis://127.0.0.1:6379/0")
QUEUE = f"kasparro-test-{SESSION_TAG}"


def redis_db(number: int) -> str:
    """Return the test Redis (the server BROKER_URL names, password included) at database `number`."""
    return f"{BROKER_URL.rpartition('/')[0]}/{number}"


API_KEY = "test-api-key-not-a-secret"
# Provider keys the test worker sends; the fake upstream checks them as each provider does.
PROVIDER_KEYS = {"COINPAPRIKA_API_KEY": "test-paprika-key", "COINGECKO_API_KEY": "test-gecko-key",
                 "CRYPTOCOMPARE_API_KEY": "test-cryptocompare-key"}
RATE_LIMIT_PREFIX = f"kasparro-test-{SESSION_TAG}:ratelimit"
KEEP_TABLES = {"alembic_version"}


def test_config(sources_file: Path) -> dict[str, Any]:
    """Return the settings every test app and test worker share."""
    return {
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": DATABASE_URL,
        "BROKER_URL": BROKER_URL,
        "RESULT_BACKEND": BROKER_URL,
        "REDIS_URL": BROKER_URL,
        "TASK_QUEUE": QUEUE,
        "RATE_LIMIT_PREFIX": RATE_LIMIT_PREFIX,
        "API_KEY": API_KEY,
        "SOURCES_FILE": str(sources_file),
        "ENABLED_SOURCES": [],
        "OFFLINE": False,
    }


@pytest.fixture(scope="session", autouse=True)
def _forget_redis_keys() -> Iterator[None]:
    """Leave nothing of this session in Redis: its queues, bindings, budgets and markers carry its tag."""
    yield
    client = redis.Redis.from_url(BROKER_URL)
    for key in client.scan_iter(f"*{SESSION_TAG}*"):
        client.delete(key)


@pytest.fixture(scope="session")
def sources_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sources.toml the tests rewrite; starts as a copy of the shipped one."""
    path = tmp_path_factory.mktemp("config") / "sources.toml"
    path.write_text((ROOT / "sources.toml").read_text())
    return path


@pytest.fixture(scope="session")
def app(sources_file: Path) -> Iterator[Flask]:
    """The application on a fresh database built by the Alembic migrations."""
    application = create_app(test_config(sources_file))
    init_db(application)
    yield application
    with application.app_context():
        db.engine.dispose()
    drop_database(DATABASE_URL)


@pytest.fixture(autouse=True)
def _clean_tables(request: pytest.FixtureRequest) -> None:
    """Empty every table before each test that uses the database."""
    if "app" not in request.fixturenames:
        return
    empty_tables(request.getfixturevalue("app"))


def empty_tables(application: Flask) -> None:
    """Empty every table and forget this session's rate-limit budgets."""
    with application.app_context():
        tables = [t for t in db.metadata.sorted_tables if t.name not in KEEP_TABLES]
        # A worker still loading for an earlier test holds locks; fail that test's successor by name rather
        # than hang the suite (a transform waiting on its own second connection, queued behind the TRUNCATE).
        db.session.execute(text("SET LOCAL lock_timeout = '60s'"))
        db.session.execute(text("TRUNCATE " + ", ".join(t.name for t in tables) + " RESTART IDENTITY CASCADE"))
        db.session.commit()
    client = redis.Redis.from_url(BROKER_URL)
    for key in client.scan_iter(f"{RATE_LIMIT_PREFIX}*"):
        client.delete(key)


@pytest.fixture
def app_ctx(app: Flask) -> Iterator[None]:
    """Push an application context for the duration of one test."""
    with app.app_context():
        yield


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client for the HTTP API."""
    return app.test_client()


def _worker_env(sources_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(ENV_FILE="", DATABASE_URL=DATABASE_URL, BROKER_URL=BROKER_URL, RESULT_BACKEND=BROKER_URL,
               REDIS_URL=BROKER_URL, TASK_QUEUE=QUEUE, SOURCES_FILE=str(sources_file), LEASE_SECONDS="30",
               BATCH_SIZE="100", TASK_MAX_RETRIES="3", TASK_BACKOFF_BASE_SECONDS="0.25", RATE_LIMIT_PREFIX=RATE_LIMIT_PREFIX,
               RATE_LIMIT_WINDOW_SECONDS="1", PYTHONPATH=str(ROOT), **PROVIDER_KEYS)
    return env


@pytest.fixture(scope="session")
def worker(app: Flask, sources_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen]:
    """A real Celery worker process consuming this test session's queue."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    command = [sys.executable, "-m", "celery", "-A", "kasparro.worker", "worker", "--loglevel=INFO",
               "-Q", QUEUE, "-c", "2", "-n", f"test-{SESSION_TAG}@%h", "--without-gossip", "--without-mingle"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=_worker_env(sources_file), stdout=out, stderr=subprocess.STDOUT,
                                   cwd=ROOT, start_new_session=True)
    celery = app.extensions["celery"]
    deadline = time.monotonic() + 60
    while not celery.control.ping(destination=[f"test-{SESSION_TAG}@{os.uname().nodename}"], timeout=0.5):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start:\n{log.read_text()[-4000:]}")
    process.log_path = log  # type: ignore[attr-defined]
    yield process
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def wait_for_run(app: Flask, run_id: int, timeout: float = 60) -> Run:
    """Poll until a run reaches a final status, and return it."""
    deadline = time.monotonic() + timeout
    with app.app_context():
        while time.monotonic() < deadline:
            db.session.expire_all()
            run = db.session.get(Run, run_id)
            if run is not None and run.status in ("success", "partial", "failed"):
                db.session.expunge_all()
                return run
            time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish within {timeout}s")
