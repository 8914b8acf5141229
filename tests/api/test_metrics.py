"""GET /metrics: request metrics plus ETL figures read from Postgres, in one process and across several."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families

from kasparro import liveness
from kasparro.config import HEARTBEAT_KEY
from kasparro.db import db
from kasparro.models import DriftEvent
from tests.api import factories as f
from tests.conftest import ROOT, redis_db
from tests.conftest import test_config as config_for


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_expose_etl_figures_from_the_database(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        f.run("success", ("api",), inserted=40, rejected=2, requests=5, retries=1, throttled=1, wait_seconds=1.5)
        f.run("failed", ("api", "csv"), inserted=0)
        db.session.commit()

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    samples = _samples(response.get_data(as_text=True))
    assert samples[("kasparro_database_up", ())] == 1
    assert samples[("kasparro_runs_total", (("status", "success"),))] == 1
    assert samples[("kasparro_runs_total", (("status", "failed"),))] == 1
    assert samples[("kasparro_runs_in_progress", (("status", "running"),))] == 0
    assert samples[("kasparro_quote_rows_total", (("source", "api"),))] == 40
    assert samples[("kasparro_rejected_records_total", (("source", "api"),))] == 2
    assert samples[("kasparro_source_requests_total", (("source", "api"),))] == 5
    assert samples[("kasparro_source_retries_total", (("source", "api"),))] == 1
    assert samples[("kasparro_source_throttled_responses_total", (("source", "api"),))] == 1
    assert samples[("kasparro_source_wait_seconds_total", (("source", "api"),))] == 1.5
    assert ("kasparro_last_success_timestamp_seconds", (("source", "api"),)) in samples
    assert ("kasparro_last_failure_timestamp_seconds", (("source", "csv"),)) in samples


def test_requests_are_counted_by_route(client: FlaskClient) -> None:
    client.get("/health/live")
    client.get("/runs/424242")

    samples = _samples(client.get("/metrics").get_data(as_text=True))

    live = [v for (name, labels), v in samples.items()
            if name == "kasparro_http_request_duration_seconds_count" and ("url_rule", "/health/live") in labels]
    missing_run = [labels for (name, labels), _ in samples.items()
                   if name == "kasparro_http_request_duration_seconds_count" and ("status", "404") in labels]
    assert live and live[0] >= 1
    assert any(("url_rule", "/runs/<int:run_id>") in labels for labels in missing_run)


def test_a_scrape_answers_even_when_the_database_is_down(make_app: Callable[..., Flask]) -> None:
    no_db = make_app(SQLALCHEMY_DATABASE_URI="postgresql+psycopg2://postgres@127.0.0.1:1/none")

    response = no_db.test_client().get("/metrics")

    assert response.status_code == 200
    assert _samples(response.get_data(as_text=True))[("kasparro_database_up", ())] == 0


_CHILD = """
import os, sys
os.environ["ENV_FILE"] = ""
from kasparro import create_app
app = create_app({"SQLALCHEMY_DATABASE_URI": sys.argv[1], "API_KEY": None})
for _ in range(3):
    assert app.test_client().get("/health/live").status_code == 200
"""


def test_multiprocess_mode_merges_every_process_requests(app: Flask, sources_file: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         make_app: Callable[..., Flask]) -> None:
    # As under gunicorn: each process writes its own files, the scrape adds them up.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
    database = config_for(sources_file)["SQLALCHEMY_DATABASE_URI"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", _CHILD, database], env=env, check=True, cwd=ROOT, timeout=60)
    here = make_app()
    here.test_client().get("/health/live")

    samples = _samples(here.test_client().get("/metrics").get_data(as_text=True))

    live = sum(v for (name, labels), v in samples.items()
               if name == "kasparro_http_request_duration_seconds_count" and ("url_rule", "/health/live") in labels)
    assert live == 4
    assert samples[("kasparro_database_up", ())] == 1


def test_the_api_server_removes_its_own_metrics_directory_when_it_stops_and_a_dead_servers_at_start(
        sources_file: Path, tmp_path: Path) -> None:
    # TMPDIR: where tempfile puts the directory, so nothing outside tmp_path is looked at or removed.
    dead, alive, other = (tmp_path / "kasparro-metrics-999999999", tmp_path / f"kasparro-metrics-{os.getpid()}",
                          tmp_path / "kasparro-metrics-notes")
    for left in (dead, alive, other):
        left.mkdir()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(TMPDIR=str(tmp_path), GUNICORN_BIND=f"127.0.0.1:{port}", ENV_FILE="", WEB_CONCURRENCY="1",
               DATABASE_URL=config_for(sources_file)["SQLALCHEMY_DATABASE_URI"], PYTHONPATH=str(ROOT))
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    own = tmp_path / f"kasparro-metrics-{server.pid}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
                    scraped = answer.status
                break
            except OSError:
                time.sleep(0.2)
        running = sorted(p.name for p in tmp_path.iterdir())
    finally:
        server.terminate()
        server.wait(timeout=30)

    assert scraped == 200
    assert running == sorted([own.name, alive.name, other.name])  # the dead server's went at start
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name])  # its own at exit


# A Redis database of its own, so the worker keys and heartbeat counted are only the ones written here.
METRICS_REDIS = redis_db(13)


def seed_figures() -> None:
    """Record the runs every ETL figure and alert reads: history, a last run, a running one, findings and drift."""
    for extracted in (100, 120, 90):
        f.run("success", ("api",), extracted=extracted, loaded=extracted, inserted=extracted)
    f.run("success", ("api",), extracted=0, loaded=0, inserted=0)
    f.run("partial", ("csv",), seconds=42, extracted=200, loaded=190, inserted=150, rejected=10, throttled=3,
          waits=4, wait_seconds=2.5)
    failed = f.run("failed", ("csv",), started=datetime.now(UTC) - timedelta(minutes=9))
    f.finding(failed.source_runs[0], rule="volume")
    running = f.run("running", ("csv",), started=datetime.now(UTC) - timedelta(minutes=10))
    running.source_runs[0].stage = "transform"
    f.batch(running.source_runs[0])
    db.session.add(DriftEvent(source="csv", run_id=failed.id, run_source_id=failed.source_runs[0].id, field="price",
                              kind="missing", action="rejected"))
    db.session.commit()


def test_metrics_expose_last_run_usual_rows_and_stuck_stages(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        seed_figures()

    samples = _samples(client.get("/metrics").get_data(as_text=True))

    api, csv = (("source", "api"),), (("source", "csv"),)
    assert samples[("kasparro_last_run_extracted_records", api)] == 0
    assert samples[("kasparro_usual_extracted_records", api)] == 95  # median of 100, 120, 90, 0
    assert ("kasparro_usual_extracted_records", csv) not in samples  # one successful run is no habit yet
    assert samples[("kasparro_last_run_status", (("source", "csv"), ("status", "running")))] == 1
    assert samples[("kasparro_last_run_status", (("source", "csv"), ("status", "failed")))] == 0
    assert samples[("kasparro_source_runs_total", (("source", "csv"), ("status", "failed")))] == 1
    assert samples[("kasparro_source_runs_total", (("source", "csv"), ("status", "partial")))] == 1
    # The running run has not finished: the last finished one (failed, no rows) is what "last run" shows.
    assert samples[("kasparro_last_run_rejected_records", csv)] == 0
    assert samples[("kasparro_rejected_records_total", csv)] == 10
    assert samples[("kasparro_extracted_records_total", csv)] == 200
    assert samples[("kasparro_source_waits_total", csv)] == 4
    assert samples[("kasparro_schedule_interval_seconds", csv)] == app.config["ETL_INTERVAL_SECONDS"]
    assert samples[("kasparro_runs_in_progress", (("status", "running"),))] == 1
    assert samples[("kasparro_drift_events_total", (("kind", "missing"), ("source", "csv")))] == 1
    idle = [(labels, v) for (name, labels), v in samples.items() if name == "kasparro_running_source_idle_seconds"]
    [(labels, seconds)] = idle
    assert dict(labels)["stage"] == "transform" and dict(labels)["source"] == "csv"
    assert 0 <= seconds < 60  # the batch it just wrote is its last progress, not the start ten minutes ago


@contextmanager
def liveness_in_redis(workers: int, beat_age: float) -> Iterator[str]:
    """Leave `workers` worker keys and a beat heartbeat `beat_age` seconds old in METRICS_REDIS while open."""
    store = redis.Redis.from_url(METRICS_REDIS)
    keys = [f"{liveness.KEY_PREFIX}metrics-test-{n}/{n}" for n in range(workers)]
    try:
        for key in keys:
            store.set(key, 1, ex=60)
        store.set(HEARTBEAT_KEY, time.time() - beat_age, ex=60)
        yield METRICS_REDIS
    finally:
        store.delete(*keys, HEARTBEAT_KEY)


def test_metrics_count_live_workers_and_age_the_beat_heartbeat(make_app: Callable[..., Flask]) -> None:
    with liveness_in_redis(workers=2, beat_age=30) as url:
        samples = _samples(make_app(REDIS_URL=url).test_client().get("/metrics").get_data(as_text=True))

    assert samples[("kasparro_redis_up", ())] == 1
    assert samples[("kasparro_live_workers", ())] == 2
    assert 30 <= samples[("kasparro_beat_heartbeat_age_seconds", ())] < 60


def test_a_scrape_answers_when_redis_is_down(make_app: Callable[..., Flask]) -> None:
    response = make_app(REDIS_URL="redis://127.0.0.1:1/0").test_client().get("/metrics")

    samples = _samples(response.get_data(as_text=True))
    assert response.status_code == 200
    assert samples[("kasparro_redis_up", ())] == 0
    assert samples[("kasparro_database_up", ())] == 1
    assert ("kasparro_live_workers", ()) not in samples
