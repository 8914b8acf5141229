"""GET /stats: per source and per run status."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flask import Flask
from flask.testing import FlaskClient

from kasparro.db import db
from tests.api import factories as f
from tests.api.factories import T0


def test_stats_are_empty_but_complete_before_any_run(client: FlaskClient) -> None:
    body = client.get("/stats").get_json()["data"]

    assert body == {"sources": [], "last_run": None,
                    "runs_by_status": {"queued": 0, "running": 0, "success": 0, "partial": 0, "failed": 0}}


def test_stats_report_rows_rejects_failures_and_rate_limit_evidence_per_source(app: Flask,
                                                                               client: FlaskClient) -> None:
    with app.app_context():
        first = f.run("success", ("api", "csv"), started=T0, inserted=100, loaded=100, extracted=100)
        f.run("partial", ("api",), started=T0 + timedelta(hours=1), inserted=5, updated=7, loaded=12, rejected=2,
              requests=9, retries=2, throttled=1, wait_seconds=3.25)
        failed = f.run("failed", ("csv",), started=T0 + timedelta(hours=2))
        failed.source_runs[0].error = "extract: file vanished"
        failed.error = "every source failed"
        f.reject(f.batch(first.source_runs[0]), {"x": 1}, {"price": ["missing"]}, "row 3")
        db.session.commit()
        failed_id = failed.id

    body = client.get("/stats").get_json()["data"]

    api, csv = body["sources"]
    assert (api["source"], api["rows_total"], api["rejected_total"], api["last_run_status"]) == (
        "api", 105, 1, "partial")
    assert api["last_run"] == {"extracted": 0, "loaded": 12, "inserted": 5, "updated": 7, "skipped": 0,
                               "rejected": 2, "duplicates": 0}
    assert (api["requests_last_run"], api["retries_last_run"], api["throttled_last_run"],
            api["wait_seconds_last_run"]) == (9, 2, 1, 3.25)
    assert api["last_success_at"].startswith("2024-01-01T01:00:10") and api["last_failure_at"] is None
    assert (csv["rows_total"], csv["last_run_id"], csv["last_error"]) == (100, failed_id, "extract: file vanished")
    assert csv["last_success_at"].startswith("2024-01-01T00:00:10")
    assert csv["last_failure_at"].startswith("2024-01-01T02:00:10")
    assert body["runs_by_status"] == {"queued": 0, "running": 0, "success": 1, "partial": 1, "failed": 1}
    assert body["last_run"]["id"] == failed_id and body["last_run"]["error"] == "every source failed"
    # Their last success was in 2024: far more than twice the 300 s schedule ago.
    assert api["stale"] and api["freshness_seconds"] > 600 and csv["freshness_seconds"] > api["freshness_seconds"]


def test_stats_say_which_source_is_fresh(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        f.run("success", ("csv",), "schedule", started=datetime.now(timezone.utc) - timedelta(seconds=60))
        db.session.commit()

    body = client.get("/stats").get_json()["data"]

    (csv,) = body["sources"]
    # It finished 50 s ago, well inside twice the 300 s schedule.
    assert not csv["stale"] and 45 <= csv["freshness_seconds"] <= 120
