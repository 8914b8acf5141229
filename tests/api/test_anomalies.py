"""GET /anomalies, and the quality findings in /runs/<id>, /runs/compare and /metrics."""
from __future__ import annotations

from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from kasparro.db import db
from tests.api import factories as f


def _seed(app: Flask) -> tuple[int, int]:
    """Two runs: the first with 3 findings on csv, the second with 2 on api (one about bitcoin)."""
    with app.app_context():
        first, second = f.run(sources=("csv",)), f.run(sources=("api",))
        coin = f.asset("bitcoin")
        for rule in ("volume", "slow_run", "volume"):
            f.finding(first.source_runs[0], rule, at=f.T0)
        f.finding(second.source_runs[0], "price_jump", coin, observed=300, expected=100)
        f.finding(second.source_runs[0], "asset_disappeared", coin, severity="info", observed=None, expected=None)
        db.session.commit()
        return first.id, second.id


def test_anomalies_list_newest_first_with_the_rule_and_the_asset(app: Flask, client: FlaskClient) -> None:
    _, second = _seed(app)

    body = client.get("/anomalies").get_json()

    assert [a["rule"] for a in body["data"]] == ["asset_disappeared", "price_jump", "volume", "slow_run", "volume"]
    top = body["data"][1]
    assert {k: top[k] for k in ("run_id", "source", "rule", "asset", "severity", "observed", "expected")} == \
        {"run_id": second, "source": "api", "rule": "price_jump", "asset": "bitcoin", "severity": "warning",
         "observed": 300.0, "expected": 100.0}
    assert body["data"][0]["observed"] is None and body["data"][2]["asset"] is None
    assert body["meta"]["has_more"] is False


def test_anomalies_filter_by_source_rule_run_and_since(app: Flask, client: FlaskClient) -> None:
    first, second = _seed(app)

    def rules(query: str) -> list[str]:
        response = client.get(f"/anomalies?{query}")
        assert response.status_code == 200, response.get_json()
        return [a["rule"] for a in response.get_json()["data"]]

    assert rules("source=csv") == ["volume", "slow_run", "volume"]
    assert rules("rule=volume") == ["volume", "volume"]
    assert rules(f"run_id={second}") == ["asset_disappeared", "price_jump"]
    assert rules(f"run_id={first}&rule=slow_run") == ["slow_run"]
    assert rules(f"since={(f.T0 + timedelta(days=1)).isoformat().replace('+', '%2B')}") == \
        ["asset_disappeared", "price_jump"]
    assert rules("source=nowhere") == []


def test_anomalies_page_with_cursors_bound_to_their_filters(app: Flask, client: FlaskClient) -> None:
    _seed(app)

    pages, cursor = [], ""
    while True:
        body = client.get(f"/anomalies?limit=2{cursor}").get_json()
        pages.append([a["id"] for a in body["data"]])
        if not body["meta"]["has_more"]:
            break
        cursor = f"&cursor={body['meta']['next_cursor']}"
    foreign = client.get(f"/anomalies?limit=2&rule=volume{cursor}")

    assert [len(p) for p in pages] == [2, 2, 1]
    ids = [i for page in pages for i in page]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 5
    assert foreign.status_code == 400 and "cursor" in foreign.get_json()["error"]["fields"]


def test_a_run_and_a_comparison_show_the_recorded_anomalies(app: Flask, client: FlaskClient) -> None:
    first, second = _seed(app)

    detail = client.get(f"/runs/{second}").get_json()["data"]
    compared = client.get(f"/runs/compare?a={first}&b={second}").get_json()["data"]

    assert [a["rule"] for a in detail["anomalies"]] == ["asset_disappeared", "price_jump"]
    recorded = compared["recorded_anomalies"]
    assert [a["rule"] for a in recorded["a"]] == ["volume", "slow_run", "volume"]
    assert [a["rule"] for a in recorded["b"]] == ["asset_disappeared", "price_jump"]


def test_metrics_count_anomalies_by_source_and_rule(app: Flask, client: FlaskClient) -> None:
    _seed(app)

    text = client.get("/metrics").get_data(as_text=True)

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "kasparro_anomalies_total"}
    assert samples == {
        ("kasparro_anomalies_total", (("rule", "volume"), ("source", "csv"))): 2,
        ("kasparro_anomalies_total", (("rule", "slow_run"), ("source", "csv"))): 1,
        ("kasparro_anomalies_total", (("rule", "price_jump"), ("source", "api"))): 1,
        ("kasparro_anomalies_total", (("rule", "asset_disappeared"), ("source", "api"))): 1,
    }
