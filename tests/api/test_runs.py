"""POST /run-etl and /runs, GET /runs, /runs/<id>, /runs/compare and /rejects."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text

from kasparro.db import db
from kasparro.models import DriftEvent, Run
from tests.api import factories as f
from tests.api.conftest import AUTH
from tests.conftest import wait_for_run


@pytest.fixture
def idle(idle_app: Flask) -> FlaskClient:
    """A client whose queued runs no worker will pick up."""
    return idle_app.test_client()


def _run_count(app: Flask) -> int:
    with app.app_context():
        return db.session.execute(select(func.count()).select_from(Run)).scalar_one()


@pytest.mark.parametrize("path", ["/run-etl", "/runs"])
def test_post_queues_a_run_and_says_where_to_poll(idle_app: Flask, idle: FlaskClient, csv_sources: Path,
                                                  path: str) -> None:
    response = idle.post(path, json={"sources": ["tiny"]}, headers=AUTH)

    body = response.get_json()
    with idle_app.app_context():
        (stored,) = db.session.execute(select(Run.id)).scalars().all()  # the one run the POST created
    assert response.status_code == 202
    assert body["data"] == {"run_id": stored, "status": "queued", "sources": ["tiny"], "created": True, "busy": []}
    assert response.headers["Location"] == f"/runs/{body['data']['run_id']}"
    assert idle.get(response.headers["Location"]).get_json()["data"]["status"] == "queued"


def test_a_post_whose_sources_are_all_held_returns_the_run_holding_them(idle: FlaskClient,
                                                                       csv_sources: Path) -> None:
    first = idle.post("/run-etl", headers=AUTH).get_json()["data"]

    again = idle.post("/run-etl", json={"sources": ["tiny"]}, headers=AUTH)

    assert again.status_code == 200
    assert again.get_json()["data"] == first | {"created": False,
                                                "busy": [{"source": "tiny", "run_id": first["run_id"]}]}


def test_a_retried_post_with_the_same_idempotency_key_returns_the_same_run(app: Flask, idle: FlaskClient,
                                                                           csv_sources: Path) -> None:
    headers = {**AUTH, "Idempotency-Key": "retry-me-1"}
    first = idle.post("/runs", headers=headers).get_json()["data"]
    with app.app_context():
        finished = db.session.get(Run, first["run_id"])
        for part in [finished, *finished.source_runs]:
            part.status = "success"
        db.session.commit()

    retried = idle.post("/runs", headers=headers)
    fresh = idle.post("/runs", headers={**AUTH, "Idempotency-Key": "another-key"})

    assert retried.status_code == 200 and retried.get_json()["data"]["run_id"] == first["run_id"]
    assert fresh.status_code == 202 and fresh.get_json()["data"]["run_id"] != first["run_id"]


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}])
def test_post_without_the_right_key_is_refused_and_records_nothing(app: Flask, client: FlaskClient,
                                                                   headers: dict[str, str]) -> None:
    response = client.post("/run-etl", json={"sources": ["tiny"]}, headers=headers)

    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert _run_count(app) == 0


def test_with_no_api_key_configured_writes_are_closed_to_everyone(app: Flask, make_app: Callable[..., Flask]) -> None:
    keyless = make_app(API_KEY=None)

    for headers in ({}, {"X-API-Key": ""}, {"X-API-Key": "None"}):
        response = keyless.test_client().post("/run-etl", headers=headers)
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "auth_not_configured"
    assert _run_count(app) == 0


@pytest.mark.parametrize(("body", "field"), [
    ({"sources": ["tiny", "nope"]}, "sources"),
    ({"sources": []}, "sources"),
    ({"sources": "tiny"}, "sources"),
    ({"surprise": 1}, "surprise"),
])
def test_bad_bodies_are_400s_naming_the_field(app: Flask, client: FlaskClient, csv_sources: Path,
                                              body: dict[str, Any], field: str) -> None:
    response = client.post("/run-etl", json=body, headers=AUTH)

    assert response.status_code == 400
    assert field in response.get_json()["error"]["fields"]
    assert _run_count(app) == 0


def test_unknown_source_is_named_in_the_message(client: FlaskClient, csv_sources: Path) -> None:
    response = client.post("/run-etl", json={"sources": ["nope"]}, headers=AUTH)

    assert "nope" in response.get_json()["error"]["message"]


def test_invalid_json_is_a_400(client: FlaskClient, csv_sources: Path) -> None:
    response = client.post("/run-etl", data="{not json", content_type="application/json", headers=AUTH)

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "bad_request"


def test_a_body_that_is_not_json_is_refused(app: Flask, client: FlaskClient, csv_sources: Path) -> None:
    response = client.post("/run-etl", data="sources=tiny", content_type="text/plain", headers=AUTH)

    assert response.status_code == 415
    assert response.get_json()["error"]["code"] == "unsupported_media_type"
    assert _run_count(app) == 0


def test_broker_down_answers_503_and_records_no_run(app: Flask, make_app: Callable[..., Flask],
                                                    csv_sources: Path) -> None:
    cut_off = make_app(BROKER_URL="redis://127.0.0.1:1/0")

    response = cut_off.test_client().post("/run-etl", json={"sources": ["tiny"]}, headers=AUTH)

    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "broker_unavailable"
    assert _run_count(app) == 0


def test_a_posted_run_finishes_on_a_real_worker(app: Flask, client: FlaskClient, csv_sources: Path,
                                                worker: Any) -> None:
    response = client.post("/run-etl", json={"sources": ["tiny"]}, headers=AUTH)
    assert response.status_code == 202, response.get_json()
    run_id = response.get_json()["data"]["run_id"]

    wait_for_run(app, run_id)
    body = client.get(response.headers["Location"]).get_json()["data"]

    assert body["status"] == "success" and body["finished_at"] and body["duration_seconds"] >= 0
    (tiny,) = body["source_runs"]
    assert (tiny["source"], tiny["status"], tiny["extracted"], tiny["inserted"]) == ("tiny", "success", 2, 2)
    assert tiny["progress"]["batches_loaded"] == tiny["progress"]["batches_extracted"] >= 1
    assert len(client.get("/data?source=tiny").get_json()["data"]) == 2


def _runs(app: Flask) -> list[int]:
    with app.app_context():
        ids = [f.run("success", ("a", "b"), "schedule", extracted=10, loaded=10, inserted=8, updated=2).id,
               f.run("failed", ("a",), "api").id,
               f.run("running", ("a", "b"), "cli", started=None).id]
        db.session.commit()
    return ids


def test_runs_are_listed_newest_first_filtered_and_paged(app: Flask, client: FlaskClient) -> None:
    ok, failed, running = _runs(app)

    everything = client.get("/runs").get_json()
    page = client.get("/runs?limit=2").get_json()
    rest = client.get(f"/runs?limit=2&cursor={page['meta']['next_cursor']}").get_json()

    assert [r["id"] for r in everything["data"]] == [running, failed, ok]
    assert [r["id"] for r in page["data"] + rest["data"]] == [running, failed, ok]
    assert everything["data"][2]["totals"] == {"extracted": 20, "loaded": 20, "inserted": 16, "updated": 4,
                                               "skipped": 0, "rejected": 0, "duplicates": 0}
    assert [r["id"] for r in client.get("/runs?status=failed").get_json()["data"]] == [failed]
    assert [r["id"] for r in client.get("/runs?trigger=cli").get_json()["data"]] == [running]
    assert client.get("/runs?status=bogus").status_code == 400


def test_run_detail_shows_counters_timing_and_batch_progress(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        run = f.run("running", ("csv",), requests=3, retries=1, throttled=1, wait_seconds=2.5, extracted=7,
                    progress_unit="bytes", progress_start=100, progress_done=600, progress_total=1100)
        for seq, state in enumerate(("loaded", "transformed", "extracted")):
            f.batch(run.source_runs[0], seq, state)
        run.source_runs[0].stage = "load"
        db.session.commit()
        run_id = run.id

    body = client.get(f"/runs/{run_id}").get_json()["data"]

    (csv,) = body["source_runs"]
    assert (csv["stage"], csv["requests"], csv["retries"], csv["throttled"], csv["wait_seconds"]) == (
        "load", 3, 1, 1, 2.5)
    eta = csv["progress"].pop("eta_seconds")
    assert csv["progress"] == {"batches_extracted": 3, "batches_transformed": 2, "batches_loaded": 1,
                               "stage": "load", "unit": "bytes", "done": 500, "total": 1000, "percent": 50.0}
    # Half read since the run started: as long again to go.
    assert csv["finished_at"] is None and csv["duration_seconds"] > 0
    assert abs(eta - csv["duration_seconds"]) < 5


def test_run_detail_lists_at_most_200_lines_of_drift_and_counts_them_all(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        run = f.run("partial", ("csv",))
        source_run = run.source_runs[0]
        db.session.add_all(DriftEvent(source="csv", run_id=run.id, run_source_id=source_run.id, field=f"k{n:04}",
                                      kind="added", new=f"k{n:04}", action="noted", records=1) for n in range(2500))
        db.session.commit()
        run_id = run.id

    response = client.get(f"/runs/{run_id}")
    page = client.get(f"/ui/runs/{run_id}")

    body = response.get_json()["data"]
    assert (len(body["drift"]), body["drift_total"]) == (200, 2500)
    assert [d["field"] for d in body["drift"][:2]] == ["k0000", "k0001"]
    assert len(response.data) < 200_000
    assert "The first 200 of 2500 findings" in page.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/runs/999", "/runs/99999999999999999999999"])
def test_unknown_run_is_a_json_404(client: FlaskClient, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_compare_gives_deltas_status_changes_and_anomalies(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        a = f.run("success", ("x", "y"), loaded=100, inserted=100, seconds=10).id
        b = f.run("partial", ("x",), loaded=20, inserted=5, updated=15, rejected=3, seconds=60).id
        db.session.commit()

    body = client.get(f"/runs/compare?a={a}&b={b}").get_json()["data"]

    x, y = body["sources"]
    assert x["delta"] | {"duration_seconds": None} == {"extracted": 0, "loaded": -80, "inserted": -95,
                                                       "updated": 15, "skipped": 0, "rejected": 3, "duplicates": 0,
                                                       "duration_seconds": None}
    assert x["delta"]["duration_seconds"] == 50 and x["status_changed"] is True
    assert (y["a"]["status"], y["b"], y["delta"]) == ("success", None, None)
    assert {(an["source"], an["kind"]) for an in body["anomalies"]} == {
        ("x", "status_regressed"), ("x", "more_rejects"), ("x", "volume_drop"), ("x", "slowdown"),
        ("y", "missing")}


def test_an_incremental_run_with_nothing_new_is_not_a_volume_drop(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        a = f.run("success", ("x",), extracted=100, loaded=100, inserted=100, seconds=10).id
        b = f.run("success", ("x",), extracted=0, loaded=0, seconds=10).id
        db.session.commit()

    body = client.get(f"/runs/compare?a={a}&b={b}").get_json()["data"]

    assert body["anomalies"] == []
    assert body["sources"][0]["delta"]["loaded"] == -100


def test_compare_needs_both_runs(app: Flask, client: FlaskClient) -> None:
    (ok, *_) = _runs(app)

    assert client.get(f"/runs/compare?a={ok}").get_json()["error"]["fields"] == {
        "b": ["Missing data for required field."]}
    assert client.get(f"/runs/compare?a={ok}&b=12345").status_code == 404


def _huge(index: int, size: int) -> dict[str, Any]:
    return {"close": f"bad-{index}", "note": "é" * size}


@settings(max_examples=5, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.sampled_from([0, 10, 1_000, 100_000, 3_000_000]), min_size=1, max_size=8))
def test_a_page_of_rejects_shows_each_long_payload_as_a_preview_and_each_whole_on_its_own(
        app: Flask, client: FlaskClient, sizes: list[int]) -> None:
    with app.app_context():
        db.session.execute(text("TRUNCATE rejected_records, raw_records, raw_batches, run_sources, runs CASCADE"))
        batch = f.batch(f.run(sources=("csv",)).source_runs[0])
        ids = [f.reject(batch, _huge(i, size), {"price_usd": ["not a number"]}, f"line {i + 2}").id
               for i, size in enumerate(sizes)]
        db.session.commit()

    page = client.get("/rejects?limit=1000")

    rows = {row["id"]: row for row in page.get_json()["data"]}
    assert len(page.data) < 2_000 + len(sizes) * 6_000  # a preview is at most 1024 characters of 4 bytes
    for reject_id, size in zip(ids, sizes):
        row = rows[reject_id]
        if row["payload_truncated"]:
            assert row["payload"] is None and len(row["payload_preview"]) == 1024
            assert row["payload_chars"] > 1024 and row["payload_hash"]
            single = client.get(f"/rejects/{reject_id}").get_json()["data"]
            assert single["payload"]["note"] == "é" * size and single["payload_truncated"] is False
        else:
            assert row["payload"]["note"] == "é" * size and row["payload_preview"] is None
            assert row["payload_chars"] == len(json.dumps(_huge(0, size), ensure_ascii=False)) <= 1024


@pytest.mark.parametrize("path", ["/rejects/0", "/rejects/424242", f"/rejects/{2**64}"])
def test_an_unknown_reject_is_a_json_404(client: FlaskClient, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"


def test_rejects_carry_reason_payload_and_position_and_filter_by_run(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        first, second = f.run(sources=("csv",)), f.run(sources=("csv",))
        for run, count in ((first, 3), (second, 1)):
            batch = f.batch(run.source_runs[0])
            for i in range(count):
                f.reject(batch, {"close": f"bad-{run.id}-{i}"}, {"price_usd": ["not a number"]}, f"line {i + 2}")
        db.session.commit()
        first_id = first.id

    page = client.get(f"/rejects?run_id={first_id}&limit=2").get_json()
    rest = client.get(f"/rejects?run_id={first_id}&limit=2&cursor={page['meta']['next_cursor']}").get_json()

    rows = page["data"] + rest["data"]
    assert len(rows) == 3 and {r["run_id"] for r in rows} == {first_id}
    assert rows[0]["reason"] == {"price_usd": ["not a number"]}
    assert rows[0]["payload"]["close"].startswith("bad-") and rows[0]["position"].startswith("line ")
    assert len(client.get("/rejects?source=csv").get_json()["data"]) == 4
    assert client.get("/rejects?source=other").get_json()["data"] == []
