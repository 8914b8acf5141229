"""The OpenAPI document describes every endpoint, and the API keeps to it under generated requests."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings

from kasparro import create_app
from kasparro.api.params import instant
from kasparro.db import db
from tests.api import factories as f
from tests.api.conftest import AUTH
from tests.conftest import test_config as config_for
from tests.pipeline.helpers import csv_spec, declare

ENDPOINTS = {
    "/data": {"get"}, "/data/latest": {"get"}, "/assets": {"get"}, "/assets/{slug}": {"get"}, "/news": {"get"},
    "/run-etl": {"post"}, "/runs": {"get", "post"}, "/runs/compare": {"get"}, "/runs/{run_id}": {"get"},
    "/rejects": {"get"}, "/rejects/{reject_id}": {"get"}, "/anomalies": {"get"}, "/drift": {"get"},
    "/stats": {"get"}, "/sources": {"get"},
    "/health": {"get"}, "/health/live": {"get"}, "/metrics": {"get"}, "/backfill": {"post"}, "/reprocess": {"post"},
    "/replay-rejects": {"post"}, "/raw/chunks/{chunk_id}/lines/{line}": {"get"},
}



def _document() -> Any:
    """The OpenAPI document of an app declaring what `csv_sources` declares, so the document's source names
    are the ones the server accepts; its sources file is gone once the document is read."""
    with tempfile.TemporaryDirectory(prefix="kasparro-contract-") as folder:
        sources = Path(folder) / "sources.toml"
        declare(sources, {"tiny": csv_spec(sources.parent / "tiny.csv")})
        return schemathesis.openapi.from_wsgi("/openapi.json", create_app(config_for(sources)))


# The document is read at collection time from an app built with the test settings (building
# the document needs no database); each case is then sent to the session's app on the test database.
schema = _document()


@pytest.fixture
def seeded(app: Flask, idle_app: Flask, csv_sources: Path) -> Flask:
    """An app whose queued runs no worker reads, a little data to read, and CSV-only sources."""
    with app.app_context():
        coin = f.asset("bitcoin", "BTC", "Bitcoin", csv="bitcoin")
        run = f.run("success", ("csv",))
        batch = f.batch(run.source_runs[0])
        f.quote(coin, batch, f.T0, 40000.5, market_cap_usd=8e11)
        f.reject(batch, {"close": "x"}, {"price_usd": ["not a number"]}, "line 3")
        f.news(batch, "g1", f.T0, "Bitcoin rallies", links=((coin, "name", "Bitcoin"),))
        db.session.commit()
    return idle_app


@schema.parametrize()
@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_every_operation_keeps_to_its_contract(case: Any, seeded: Flask) -> None:
    # Every check, "schema-valid input is accepted" included.
    if case.meta is not None and case.meta.generation.mode.is_positive and case.query:
        keep_to_rules_no_schema_states(case.query)
    if case.meta is not None and case.meta.generation.mode.is_positive and isinstance(case.body, dict):
        keep_the_window_in_order(case.body)
    case.call_and_validate(app=seeded, headers=AUTH)


def keep_to_rules_no_schema_states(query: dict[str, Any]) -> None:
    """Make a well-formed query keep the two rules JSON Schema cannot state (both documented in prose)."""
    # The document gives a cursor's alphabet and length, but only a cursor the server issued for the same
    # filters is valid: leave it out (real cursors are followed in test_data.py; malformed ones are the
    # negative cases here).
    query.pop("cursor", None)
    # until must be later than since: a rule between two fields.
    when = instant("")
    if "since" in query and "until" in query and when.deserialize(query["until"]) <= when.deserialize(query["since"]):
        del query["until"]


def keep_the_window_in_order(body: dict[str, Any]) -> None:
    """Make a well-formed backfill body keep end at or after start, a rule between two fields."""
    when = instant("")
    if "start" in body and "end" in body and when.deserialize(body["end"]) < when.deserialize(body["start"]):
        body["start"], body["end"] = body["end"], body["start"]


def test_the_document_lists_every_endpoint_with_security_and_errors(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()

    assert spec["openapi"].startswith("3.")
    assert {path: set(ops) - {"parameters"} for path, ops in spec["paths"].items()} == ENDPOINTS
    assert spec["components"]["securitySchemes"]["ApiKeyAuth"] == {"type": "apiKey", "in": "header",
                                                                   "name": "X-API-Key"}
    post = spec["paths"]["/run-etl"]["post"]
    assert post["security"] == [{"ApiKeyAuth": []}]
    assert {"200", "202", "400", "401", "503"} <= set(post["responses"])
    assert "Location" in post["responses"]["202"]["headers"]
    assert spec["paths"]["/health"]["get"]["security"] == []
    assert "security" not in spec  # reads are open by default
    assert "400" in spec["paths"]["/data"]["get"]["responses"]
    assert {p["name"] for p in spec["paths"]["/data"]["get"]["parameters"]} == {
        "asset", "symbol", "source", "since", "until", "sort", "limit", "cursor"}


def test_docs_are_served(client: FlaskClient) -> None:
    page = client.get("/docs")

    assert page.status_code == 200 and b"swagger-ui" in page.data
    try:
        import swagger_ui_bundle  # noqa: F401
    except ImportError:
        assert b"cdn.jsdelivr.net" in page.data
    else:
        assert b"/docs/assets/swagger-ui-bundle.js" in page.data
        assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
