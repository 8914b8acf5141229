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
from tests.conftest import BROKER_URL, redis_db

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
    app.extensions.pop("kasparro_health_pings", None)  # an answer kept from before this worker started
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
    lonely = make_app(BROKER_URL=redis_db(13), HEALTH_WORKER_TIMEOUT_SECONDS=0.3)

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


def test_a_failing_dependency_is_named_to_clients_without_its_host_user_or_password(
        make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture) -> None:
    broken = make_app(SQLALCHEMY_DATABASE_URI="postgresql+psycopg2://dbuser_x:dbpass_x@127.0.0.1:1/none",
                      BROKER_URL="redis://:redispass_x@127.0.0.1:1/0", REDIS_URL="redis://:redispass_x@127.0.0.1:1/0")

    with caplog.at_level("WARNING", logger="kasparro.api.health"):
        response = broken.test_client().get("/health")

    body, shown = response.get_json()["data"], response.get_data(as_text=True)
    assert response.status_code == 503
    assert {name: body["checks"][name]["error"] for name in ("database", "broker", "beat")} == {
        "database": "the database did not answer", "broker": "the broker did not answer",
        "beat": "the beat heartbeat could not be read"}
    for detail in ("127.0.0.1", "dbuser_x", "dbpass_x", "redispass_x", "port 1", "Connection refused"):
        assert detail not in shown
    logged = caplog.text
    assert "health check database failed" in logged and "127.0.0.1" in logged  # the detail is for operators
    assert "dbpass_x" not in logged and "redispass_x" not in logged


def test_polling_health_asks_the_workers_once_per_health_worker_cache_seconds(
        make_app: Callable[..., Flask]) -> None:
    # A Redis database no worker listens on: every ping waits its whole timeout, so each one shows.
    lonely = make_app(BROKER_URL=redis_db(11), HEALTH_WORKER_TIMEOUT_SECONDS=0.5,
                      HEALTH_WORKER_CACHE_SECONDS=3)
    client = lonely.test_client()

    def workers_check() -> dict[str, Any]:
        return client.get("/health").get_json()["data"]["checks"]["workers"]

    started = time.monotonic()
    first = workers_check()
    asked = time.monotonic()  # the answer was kept at or before this moment
    polled = [workers_check() for _ in range(5)]
    within = time.monotonic() - started < 3  # all five came inside the period (seconds to spare, even loaded)
    time.sleep(max(0.0, asked + 3 - time.monotonic()))  # until the period is over, by the clock that defines it
    later = workers_check()

    assert first["error"] == "no worker answered a ping" and first["latency_ms"] >= 450
    assert within and [p["error"] for p in polled] == [first["error"]] * 5
    assert max(p["latency_ms"] for p in polled) < 450  # the kept answer: a broadcast waits its 0.5 s timeout
    assert later["latency_ms"] >= 450  # past the period the workers are asked again
