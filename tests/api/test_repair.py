"""POST /backfill, /reprocess and /replay-rejects: the key, validation, refusals and busy sources."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from kasparro.api.auth import SECURITY_SCHEME
from kasparro.db import db
from kasparro.models import Run
from tests.api.conftest import AUTH
from tests.pipeline.helpers import csv_spec, declare

WINDOW = {"start": "2019-04-01", "end": "2019-04-30T23:59:59Z"}
REPAIRS = [("/backfill", {"source": "tiny", **WINDOW}), ("/reprocess", {"source": "tiny"}),
           ("/replay-rejects", {"source": "tiny"})]


@pytest.fixture
def idle(idle_app: Flask) -> FlaskClient:
    """A client whose queued runs no worker will pick up."""
    return idle_app.test_client()


def _runs(app: Flask) -> list[tuple[str, str]]:
    with app.app_context():
        return [tuple(r) for r in db.session.execute(select(Run.trigger, Run.status).order_by(Run.id))]


@pytest.mark.parametrize(("path", "body"), REPAIRS)
@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}])
def test_every_repair_needs_the_key_and_records_nothing_without_it(app: Flask, client: FlaskClient,
                                                                   csv_sources: Path, path: str,
                                                                   body: dict[str, Any],
                                                                   headers: dict[str, str]) -> None:
    response = client.post(path, json=body, headers=headers)

    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert _runs(app) == []


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/backfill", {"source": "tiny", "start": "2019-04-01"}, "end"),
    ("/backfill", {"source": "tiny", "start": "2019-04-02", "end": "2019-04-01"}, "end"),
    ("/backfill", {"source": "tiny", "start": "not a date", "end": "2019-04-01"}, "start"),
    ("/backfill", {"source": "tiny", **WINDOW, "coins": []}, "coins"),
    ("/backfill", {**WINDOW}, "source"),
    ("/reprocess", {"source": "tiny", "run_id": 0}, "run_id"),
    ("/reprocess", {"source": "tiny", "since": "soon"}, "since"),
    ("/reprocess", {}, "source"),
    ("/replay-rejects", {"surprise": 1}, "surprise"),
    ("/replay-rejects", {"source": "x" * 101}, "source"),
])
def test_bad_bodies_are_422s_naming_the_field(app: Flask, client: FlaskClient, csv_sources: Path, path: str,
                                              body: dict[str, Any], field: str) -> None:
    response = client.post(path, json=body, headers=AUTH)

    assert response.status_code == 422, response.get_json()
    assert field in response.get_json()["error"]["fields"]
    assert _runs(app) == []


def test_a_source_that_cannot_backfill_is_a_422_naming_those_that_can(app: Flask, client: FlaskClient,
                                                                      sources_file: Path, tmp_path: Path) -> None:
    declare(sources_file, {"tiny": csv_spec(tmp_path / "t.csv"),
                           "paprika": {"kind": "coinpaprika", "base_url": "http://127.0.0.1:9/v1"}})

    response = client.post("/backfill", json={"source": "paprika", **WINDOW}, headers=AUTH)

    error = response.get_json()["error"]
    assert response.status_code == 422 and error["code"] == "repair_refused"
    assert error["fields"]["source"] == ["a coinpaprika source cannot backfill; sources that can: tiny"]
    assert _runs(app) == []


def test_an_unknown_source_is_a_422_naming_it(app: Flask, client: FlaskClient, csv_sources: Path) -> None:
    response = client.post("/backfill", json={"source": "nope", **WINDOW}, headers=AUTH)

    error = response.get_json()["error"]
    assert response.status_code == 422 and error["fields"]["source"] == ["unknown or disabled sources: nope"]


@pytest.mark.parametrize(("body", "message"), [
    ({"source": "tiny"}, "tiny: no stored raw records to reprocess"),
    ({"source": "tiny", "run_id": 7}, "tiny: no stored raw records received by run 7 to reprocess"),
])
def test_a_reprocess_with_nothing_stored_is_a_409(app: Flask, client: FlaskClient, csv_sources: Path,
                                                  body: dict[str, Any], message: str) -> None:
    response = client.post("/reprocess", json=body, headers=AUTH)

    assert response.status_code == 409
    assert response.get_json()["error"] == {"code": "nothing_to_repair", "message": message}
    assert _runs(app) == []


def test_nothing_waiting_for_a_replay_is_a_409_when_no_source_is_named(app: Flask, client: FlaskClient,
                                                                      csv_sources: Path) -> None:
    response = client.post("/replay-rejects", headers=AUTH)

    assert response.status_code == 409
    assert response.get_json()["error"]["message"] == "no rejected records are waiting for a replay"
    assert _runs(app) == []


def test_a_backfill_is_queued_as_its_own_run_and_a_busy_source_answers_busy(app: Flask, idle: FlaskClient,
                                                                            csv_sources: Path) -> None:
    first = idle.post("/backfill", json={"source": "tiny", **WINDOW}, headers=AUTH)
    held = first.get_json()["data"]["run_id"]
    again = idle.post("/backfill", json={"source": "tiny", **WINDOW}, headers=AUTH)
    replay = idle.post("/replay-rejects", json={"source": "tiny"}, headers=AUTH)
    listed = idle.get("/runs?trigger=backfill").get_json()["data"]

    assert first.status_code == 202 and first.headers["Location"] == f"/runs/{held}"
    for busy in (again, replay):
        assert busy.status_code == 200
        assert busy.get_json()["data"]["created"] is False
        assert busy.get_json()["data"]["busy"] == [{"source": "tiny", "run_id": held}]
    assert [r["id"] for r in listed] == [held] and _runs(app) == [("backfill", "queued")]
    with app.app_context():
        config = db.session.get(Run, held).config["tiny"]
    assert config["backfill"] == {"start": "2019-04-01T00:00:00+00:00", "end": "2019-04-30T23:59:59+00:00",
                                  "coins": []}


def test_the_repair_endpoints_are_in_the_openapi_document(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]

    for path in ("/backfill", "/reprocess", "/replay-rejects"):
        assert {"202", "200", "401", "422"} <= set(paths[path]["post"]["responses"])
        assert paths[path]["post"]["security"] == [{SECURITY_SCHEME: []}]
    with client.application.app_context():
        assert db.session.execute(select(func.count()).select_from(Run)).scalar_one() == 0
