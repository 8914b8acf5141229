"""GET /sources: every declared source, enabled or not, with its settings, last run, checkpoint and schedule."""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from kasparro.api import sources as api_sources
from kasparro.beat import REDIS_URL_SETTING, HeartbeatScheduler
from kasparro.sources.base import CURSOR_SUMMARY
from tests.conftest import BROKER_URL
from tests.pipeline.helpers import HEADER, csv_spec, declare, quote_count, run_now


@pytest.fixture
def declared(sources_file: Path, tmp_path: Path) -> Iterator[Path]:
    """Declare a CSV source, a disabled CSV source and an API source with secret-looking settings."""
    original = sources_file.read_text()
    data = tmp_path / "tiny.csv"
    data.write_text(HEADER + "bitcoin,2019-04-20,5296.23,13893183515,93510546402\n"
                    "ethereum,2019-04-20,174.26,6159014000,18409744213\n"
                    "ethereum,2019-04-21,not-a-price,1,1\n")
    declare(sources_file, {
        "tiny": csv_spec(data),
        "parked": csv_spec(tmp_path / "parked.csv", enabled=False),
        "gecko": {"kind": "coingecko", "base_url": "https://user:hunter2@gecko.example/api/v3?x_cg_pro_api_key=s3",
                  "api_key_env": "COINGECKO_API_KEY", "api_key": "sk-live-123", "per_page": 100},
    })
    yield data
    sources_file.write_text(original)


@pytest.fixture
def next_run_key(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A key of this test's own for beat's published schedule."""
    key = f"kasparro:test:next-run:{uuid.uuid4().hex}"
    monkeypatch.setitem(app.config, "BEAT_NEXT_RUN_KEY", key)
    yield key
    redis.Redis.from_url(BROKER_URL).delete(key)


def _by_name(client: FlaskClient) -> dict[str, dict[str, Any]]:
    response = client.get("/sources")
    assert response.status_code == 200, response.get_json()
    return {row["name"]: row for row in response.get_json()["data"]}


def test_every_declared_source_is_listed_with_kind_and_whether_it_runs(client: FlaskClient, declared: Path,
                                                                       next_run_key: str) -> None:
    listed = _by_name(client)

    assert {name: (row["kind"], row["enabled"]) for name, row in listed.items()} == {
        "tiny": ("csv", True), "parked": ("csv", False), "gecko": ("coingecko", True)}
    assert listed["tiny"]["settings"]["path"] == str(declared)
    assert listed["tiny"]["settings"]["columns"]["price_usd"] == "close"
    assert (listed["tiny"]["last_run"], listed["tiny"]["checkpoint"], listed["tiny"]["rows_total"]) == (None, None, 0)
    assert listed["parked"]["next_run_at"] is None and listed["parked"]["schedule_seconds"] is None


def test_no_secret_reaches_the_listing(client: FlaskClient, declared: Path, next_run_key: str) -> None:
    body = client.get("/sources").get_data(as_text=True)
    gecko = _by_name(client)["gecko"]["settings"]

    assert "hunter2" not in body and "sk-live-123" not in body and "=s3" not in body
    assert "api_key" not in gecko and gecko["api_key_env"] == "COINGECKO_API_KEY" and gecko["per_page"] == 100


def test_after_a_run_a_source_shows_its_last_run_rows_and_checkpoint_in_words(app: Flask, client: FlaskClient,
                                                                              declared: Path, next_run_key: str,
                                                                              worker: Any) -> None:
    run = run_now(app, ["tiny"])
    tiny = _by_name(client)["tiny"]

    assert tiny["last_run"]["run_id"] == run.id and tiny["last_run"]["status"] == "partial"
    assert tiny["last_run"]["counts"]["rejected"] == 1 and tiny["rejected_total"] == 1
    assert tiny["rows_total"] == quote_count(app, "tiny") == 2
    size = declared.stat().st_size
    assert tiny["checkpoint"]["summary"] == f"tiny.csv read to line 4, byte {size:,} of {size:,}"
    assert tiny["checkpoint"]["run_id"] == run.id


def test_the_next_run_is_when_beat_last_said_it_is_due(app: Flask, client: FlaskClient, declared: Path,
                                                       next_run_key: str, tmp_path: Path) -> None:
    assert _by_name(client)["tiny"]["next_run_at"] is None  # beat has not reported
    celery = app.extensions["celery"]
    celery.conf[REDIS_URL_SETTING] = BROKER_URL
    scheduler_class = type("TestScheduler", (HeartbeatScheduler,),
                           {"heartbeat_key": next_run_key + ":beat", "next_run_key": next_run_key})
    scheduler = scheduler_class(app=celery, schedule_filename=str(tmp_path / "beat-schedule"))
    for entry in scheduler.schedule.values():
        entry.last_run_at = celery.now()  # just ran: the next one is a whole interval away
    before = time.time()
    scheduler.heartbeat()
    scheduler.close()

    listed = _by_name(client)
    due = datetime.fromisoformat(listed["tiny"]["next_run_at"]).timestamp()
    interval = app.config["ETL_INTERVAL_SECONDS"]
    assert listed["tiny"]["schedule_seconds"] == interval
    assert before + interval - 5 <= due <= time.time() + interval
    assert listed["gecko"]["next_run_at"] == listed["tiny"]["next_run_at"] and listed["parked"]["next_run_at"] is None


def test_the_api_reads_the_summary_under_the_key_sources_write_it() -> None:
    assert api_sources.CURSOR_SUMMARY == CURSOR_SUMMARY
