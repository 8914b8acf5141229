"""The OpenAPI document describes every endpoint, and the API keeps to it under generated requests."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from kasparro import create_app
from kasparro.db import db
from tests.api import factories as f
from tests.api.conftest import AUTH
from tests.conftest import ROOT
from tests.conftest import test_config as config_for

ENDPOINTS = {
    "/data": {"get"}, "/data/latest": {"get"}, "/assets": {"get"}, "/assets/{slug}": {"get"},
    "/run-etl": {"post"}, "/runs": {"get", "post"}, "/runs/compare": {"get"}, "/runs/{run_id}": {"get"},
    "/rejects": {"get"}, "/stats": {"get"}, "/health": {"get"}, "/health/live": {"get"}, "/metrics": {"get"},
}


# The document is read at collection time from an app built with the test settings (building
# the document needs no database); each case is then sent to the session's app on the test database.
schema = schemathesis.openapi.from_wsgi("/openapi.json", create_app(config_for(ROOT / "sources.toml")))


@pytest.fixture
def seeded(app: Flask, idle_app: Flask, csv_sources: Path) -> Flask:
    """An app whose queued runs no worker reads, a little data to read, and CSV-only sources."""
    with app.app_context():
        coin = f.asset("bitcoin", "BTC", "Bitcoin", csv="bitcoin")
        run = f.run("success", ("csv",))
        batch = f.batch(run.source_runs[0])
        f.quote(coin, batch, f.T0, 40000.5, market_cap_usd=8e11)
        f.reject(batch, {"close": "x"}, {"price_usd": ["not a number"]}, "line 3")
        db.session.commit()
    return idle_app


@schema.parametrize()
@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_every_operation_keeps_to_its_contract(case: Any, seeded: Flask) -> None:
    # Every check but "schema-valid input is accepted": some rules cannot be said in JSON Schema (a
    # cursor must be one we issued, since < until, a source must be declared) and rightly answer 400.
    case.call_and_validate(app=seeded, headers=AUTH, excluded_checks=[positive_data_acceptance])


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
