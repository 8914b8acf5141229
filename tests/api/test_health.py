"""GET /health and /health/live, and the beat heartbeat they read."""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from kasparro.beat import REDIS_URL_SETTING, HeartbeatScheduler
from kasparro.db import db
from tests.api import factories as f
from tests.conftest import BROKER_URL

CHECKS = {"database", "broker", "workers", "beat", "last_run"}


@pytest.fixture
def beat_key(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A heartbeat key of this test's own, so parallel sessions on the same Redis do not interfere."""
    key = f"kasparro:test:beat:{uuid.uuid4().hex}"
    monkeypatch.setitem(app.config, "HEALTH_BEAT_KEY", key)
    yield key
    redis.Redis.from_url(BROKER_URL).delete(key)


def test_live_touches_nothing_and_answers(client: FlaskClient) -> None:
    response = client.get("/health/live")

    assert response.status_code == 200
    assert response.get_json()["data"] == {"status": "alive"}


def test_all_green_with_a_worker_a_fresh_beat_and_a_good_last_run(app: Flask, client: FlaskClient, beat_key: str,
                                                                   worker: Any) -> None:
    redis.Redis.from_url(BROKER_URL).set(beat_key, time.time() - 5)
    with app.app_context():
        run_id = f.run("success").id
        db.session.commit()

    body = client.get("/health").get_json()["data"]

    assert body["status"] == "ok" and body["failing"] == []
    assert set(body["checks"]) == CHECKS
    assert body["checks"]["workers"]["details"]["workers"]
    assert body["checks"]["last_run"]["details"]["run_id"] == run_id
    assert 4 < body["checks"]["beat"]["details"]["age_seconds"] < 60


def test_stale_beat_and_failed_last_run_are_degraded_but_serving(app: Flask, client: FlaskClient,
                                                                  beat_key: str) -> None:
    redis.Redis.from_url(BROKER_URL).set(beat_key, time.time() - 600)
    with app.app_context():
        f.run("failed")
        db.session.commit()

    response = client.get("/health")

    body = response.get_json()["data"]
    assert response.status_code == 200 and body["status"] == "degraded"
    assert {"beat", "last_run"} <= set(body["failing"])
    assert "600" in body["checks"]["beat"]["error"] or "ago" in body["checks"]["beat"]["error"]
    assert body["checks"]["beat"]["severity"] == "degraded"


def test_no_beat_ever_is_named(client: FlaskClient, beat_key: str) -> None:
    body = client.get("/health").get_json()["data"]

    assert body["checks"]["beat"]["error"] == "the beat scheduler has never reported"


def test_broker_down_is_degraded_and_skips_the_worker_ping(make_app: Callable[..., Flask]) -> None:
    cut_off = make_app(BROKER_URL="redis://127.0.0.1:1/0")

    response = cut_off.test_client().get("/health")

    body = response.get_json()["data"]
    assert response.status_code == 200 and body["status"] == "degraded"
    assert not body["checks"]["broker"]["ok"] and body["checks"]["database"]["ok"]
    assert body["checks"]["workers"]["error"] == "skipped: broker unreachable"


def test_no_worker_on_the_broker_is_degraded(make_app: Callable[..., Flask]) -> None:
    # A Redis database no worker listens on: the ping goes unanswered.
    lonely = make_app(BROKER_URL="redis://127.0.0.1:6379/13", HEALTH_WORKER_TIMEOUT_SECONDS=0.3)

    body = lonely.test_client().get("/health").get_json()["data"]

    assert body["checks"]["workers"] | {"latency_ms": 0} == {
        "ok": False, "severity": "degraded", "error": "no worker answered a ping", "latency_ms": 0, "details": {}}


def test_database_down_is_503_naming_it(make_app: Callable[..., Flask]) -> None:
    no_db = make_app(SQLALCHEMY_DATABASE_URI="postgresql+psycopg2://postgres@127.0.0.1:1/none")

    response = no_db.test_client().get("/health")

    body = response.get_json()["data"]
    assert response.status_code == 503 and body["status"] == "down"
    assert "database" in body["failing"] and body["checks"]["database"]["error"]
    assert body["checks"]["last_run"]["error"] == "skipped: database unreachable"
    assert no_db.test_client().get("/health/live").status_code == 200


def test_heartbeat_scheduler_writes_last_seen_and_caps_its_sleep(app: Flask, tmp_path: Path, beat_key: str,
                                                                 client: FlaskClient) -> None:
    celery = app.extensions["celery"]
    celery.conf[REDIS_URL_SETTING] = BROKER_URL
    scheduler_class = type("TestScheduler", (HeartbeatScheduler,), {"heartbeat_key": beat_key})
    scheduler = scheduler_class(app=celery, schedule_filename=str(tmp_path / "beat-schedule"))
    scheduler.schedule.clear()  # nothing due: the tick must not send the ETL task

    before = time.time()
    sleep = scheduler.tick()

    assert sleep <= 30
    assert float(redis.Redis.from_url(BROKER_URL).get(beat_key)) >= before - 1
    assert client.get("/health").get_json()["data"]["checks"]["beat"]["ok"] is True
    scheduler.close()
