"""Every failure is JSON in one shape, with the request id; reads can be put behind the key."""
from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.api.conftest import AUTH


def _error(response) -> dict:  # type: ignore[no-untyped-def]
    assert response.is_json, response.data[:200]
    body = response.get_json()
    assert set(body) == {"error", "meta"}
    assert body["meta"]["request_id"] == response.headers["X-Request-ID"]
    return body["error"]


@pytest.mark.parametrize(("url", "field"), [
    ("/data?limit=1001", "limit"),
    ("/data?limit=0", "limit"),
    ("/data?limit=ten", "limit"),
    ("/data?since=yesterday", "since"),
    ("/data?since=0001-01-01T00:00:00%2B05:00", "since"),
    ("/data?since=2024-02-01&until=2024-01-01", "until"),
    ("/data?sort=price", "sort"),
    ("/data?cursor=not-a-cursor", "cursor"),
    ("/data?cursor=eyJrIjpbMSwyXSwiZiI6IngifQ", "cursor"),
    ("/data?colour=blue", "colour"),
    ("/data?asset=bit%00coin", "asset"),
    ("/runs?cursor=%E2%9C%93", "cursor"),
    ("/stats?verbose=1", "verbose"),
    ("/runs/1?expand=all", "expand"),
    ("/health?deep=1", "deep"),
    ("/rejects?run_id=-1", "run_id"),
    ("/anomalies?rule=weather", "rule"),
    ("/anomalies?since=soon", "since"),
])
def test_bad_parameters_are_400s_naming_the_field(client: FlaskClient, url: str, field: str) -> None:
    response = client.get(url)

    error = _error(response)
    assert response.status_code == 400
    assert error["code"] == "validation_error"
    assert field in error["fields"] and field in error["message"]


def test_limit_beyond_the_maximum_says_so(client: FlaskClient) -> None:
    error = _error(client.get("/data?limit=5000"))

    assert "1000" in error["message"]


def test_unknown_path_and_wrong_method_are_json(client: FlaskClient) -> None:
    missing, wrong = client.get("/nowhere"), client.delete("/data")

    assert (missing.status_code, _error(missing)["code"]) == (404, "not_found")
    assert (wrong.status_code, _error(wrong)["code"]) == (405, "method_not_allowed")
    assert "GET" in wrong.headers["Allow"]


def test_an_unexpected_exception_is_a_json_500_with_the_request_id(make_app: Callable[..., Flask],
                                                                   caplog: pytest.LogCaptureFixture,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Alembic's fileConfig (run by the session's migrations) disables loggers that existed before it.
    monkeypatch.setattr(logging.getLogger("kasparro.api.errors"), "disabled", False)
    broken = make_app()

    @broken.route("/boom")
    def boom() -> str:
        raise RuntimeError("secret internals")

    response = broken.test_client().get("/boom", headers={"X-Request-ID": "req-500"})

    error = _error(response)
    assert response.status_code == 500 and error["code"] == "internal_error"
    assert "secret" not in response.get_data(as_text=True)
    assert "secret internals" in caplog.text and "req-500" in caplog.text


def test_a_client_request_id_is_echoed_only_when_sane(client: FlaskClient) -> None:
    sane = client.get("/health/live", headers={"X-Request-ID": "abc-123_x.y:z"})
    insane = client.get("/health/live", headers={"X-Request-ID": "bad id; drop table"})

    assert sane.headers["X-Request-ID"] == "abc-123_x.y:z"
    assert insane.headers["X-Request-ID"] != "bad id" and len(insane.headers["X-Request-ID"]) == 32


def test_reads_need_the_key_when_the_deployment_says_so(make_app: Callable[..., Flask]) -> None:
    guarded = make_app(READS_REQUIRE_KEY=True).test_client()

    for path in ("/data", "/data/latest", "/assets", "/runs", "/rejects", "/anomalies", "/stats", "/assets/x",
                 "/runs/1"):
        response = guarded.get(path)
        assert (response.status_code, _error(response)["code"]) == (401, "unauthorized"), path
        assert guarded.get(path, headers=AUTH).status_code in (200, 404), path
    for path in ("/health/live", "/metrics", "/openapi.json", "/docs"):
        assert guarded.get(path).status_code == 200, path


def test_reads_are_open_by_default(client: FlaskClient) -> None:
    assert client.get("/data").status_code == 200
    assert client.get("/stats").status_code == 200
