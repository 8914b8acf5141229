"""`flask etl sources --check NAME`: a new source's first page mapped, validated and resolved, nothing written."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import Result
from flask import Flask
from sqlalchemy import func, select

from kasparro.db import db
from kasparro.fake_upstream import FakeUpstream
from kasparro.models import Asset, AssetAlias, Checkpoint, MarketQuote, RawBatch, RawRecord, RejectedRecord
from tests.conftest import PROVIDER_KEYS, ROOT
from tests.pipeline.helpers import COLUMNS, HEADER, csv_spec, declare, shipped

GECKO_KEY = PROVIDER_KEYS["COINGECKO_API_KEY"]
WRITTEN = (Asset, AssetAlias, Checkpoint, MarketQuote, RawBatch, RawRecord, RejectedRecord)


@pytest.fixture
def upstream(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeUpstream]:
    """The fake CoinGecko, demanding the key the app holds as COINGECKO_API_KEY."""
    monkeypatch.setitem(app.config, "SECRETS", {"COINGECKO_API_KEY": GECKO_KEY})
    with FakeUpstream(ROOT / "data" / "upstream", coingecko_key=GECKO_KEY, coingecko_plan="demo") as fake:
        yield fake


def gecko(upstream: FakeUpstream, **settings: Any) -> dict[str, Any]:
    return {"kind": "coingecko", "base_url": upstream.coingecko_url, "api_key_env": "COINGECKO_API_KEY",
            "plan": "demo", "per_page": 50, "max_pages": 4, **settings}


def check(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["etl", "sources", "--check", *args])


def markets_requests(upstream: FakeUpstream) -> int:
    return sum(r["path"].endswith("/coins/markets") for r in upstream.requests)


def row_counts(app: Flask) -> dict[str, int]:
    with app.app_context():
        return {m.__tablename__: db.session.execute(select(func.count()).select_from(m)).scalar_one()
                for m in WRITTEN}


def findings(output: str) -> dict[str, str]:
    """Return the rows of the findings table by position, as their text."""
    lines = output.splitlines()
    table = lines[[line.strip() for line in lines].index("findings"):]
    return {line.split("│")[2].strip(): line for line in table if line.count("│") == 6}


def test_a_coingecko_check_makes_one_request_and_shows_the_first_records_mapped(
        app: Flask, sources_file: Path, upstream: FakeUpstream) -> None:
    declare(sources_file, {"gecko": gecko(upstream)})

    result = check(app, "gecko", "--records", "3")

    assert result.exit_code == 0, result.output
    assert markets_requests(upstream) == 1
    assert "gecko (coingecko)" in result.output and "1 request(s), first 3 record(s)" in result.output
    for field in ("source_asset_id", "observed_at", "price_usd", "market_cap_usd", "percent_change_24h"):
        assert field in result.output
    assert "74743" in result.output  # bitcoin's current_price in the first recorded listing
    assert len(findings(result.output)) == 3


def test_a_check_never_sends_a_second_request_even_when_its_first_page_needs_one(
        app: Flask, sources_file: Path, upstream: FakeUpstream) -> None:
    # CoinGecko holds a page back until it has fetched the next when one request returns no more than a page.
    declare(sources_file, {"gecko": gecko(upstream, per_page=5)})

    result = check(app, "gecko", "--records", "5")

    assert markets_requests(upstream) == 1
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [
        "Error: gecko: its first page needs a second request; check it with --records below the records one "
        "request returns"]


def test_a_shipped_venue_check_maps_its_first_klines_and_resolves_the_pair_by_its_coins(
        app: Flask, sources_file: Path, upstream: FakeUpstream) -> None:
    declare(sources_file, {"binance_klines": shipped("binance_klines", upstream)})
    before = row_counts(app)

    result = check(app, "binance_klines", "--records", "2", "--json")

    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert [r["path"] for r in upstream.requests] == ["/binance/api/v3/klines"]
    assert (document["requests"], document["written"]) == (1, False)
    first = document["records"][0]
    # BTCUSDT's first recorded kline: open time 2018-07-07, close 6856.93017578, quote volume in USDT.
    assert (first["unified"]["observed_at"][:10], first["unified"]["price_usd"]) == ("2018-07-07", "6856.93017578")
    assert first["unified"]["volume_24h_usd"] == "3961080064.00000000"
    assert {r["identity"]["slug"] for r in document["records"]} == {"bitcoin"}
    assert first["identity"]["method"] == "override"
    assert row_counts(app) == before


def test_a_known_coin_shows_its_slug_and_how_and_the_check_writes_nothing(
        app: Flask, sources_file: Path, upstream: FakeUpstream) -> None:
    declare(sources_file, {"gecko": gecko(upstream)})
    with app.app_context():
        db.session.add(Asset(slug="ethereum", symbol="ETH", name="Ethereum"))
        db.session.commit()
    before = row_counts(app)

    result = check(app, "gecko", "--json")

    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    identities = {r["unified"]["source_asset_id"]: r["identity"] for r in document["records"]}
    assert identities["bitcoin"] == {"slug": "bitcoin", "method": "source_id", "asset_exists": False}
    assert identities["ethereum"] == {"slug": "ethereum", "method": "source_id", "asset_exists": True}
    assert (document["requests"], len(document["records"]), document["written"]) == (1, 5, False)
    assert row_counts(app) == before


def test_a_field_the_upstream_renamed_is_listed_as_missing_and_the_record_rejected(
        app: Flask, sources_file: Path, upstream: FakeUpstream) -> None:
    declare(sources_file, {"gecko": gecko(upstream)})
    requests.post(f"{upstream.base_url}/__admin/faults", headers=upstream.admin_headers, timeout=5,
                  json={"provider": "coingecko", "kind": "rename_field", "field": "current_price",
                        "to": "price_now"}).raise_for_status()

    result = check(app, "gecko", "--records", "2")

    assert result.exit_code == 0, result.output
    rows = findings(result.output)
    assert len(rows) == 2
    for row in rows.values():
        assert "current_price" in row.split("│")[4]
        assert "rejected: _schema: missing field: current_price" in row
    assert "schema drift (drift_policy warn: a run records it and goes on):\n  missing: current_price\n" \
           "  added: price_now\n" in result.output


def test_under_evolve_a_confident_rename_is_mapped_back_as_a_run_would(
        app: Flask, sources_file: Path, upstream: FakeUpstream) -> None:
    declare(sources_file, {"gecko": gecko(upstream, drift_policy="evolve")})
    upstream.inject("coingecko", "rename_field", field="current_price", to="currentPrice")

    document = json.loads(check(app, "gecko", "--records", "2", "--json").output)

    assert [r["valid"] for r in document["records"]] == [True, True]
    assert document["records"][0]["missing"] == ["current_price"]
    (renamed,) = [f for f in document["drift"]["findings"] if f["kind"] == "renamed"]
    assert (renamed["old"], renamed["new"], document["drift"]["policy"]) == ("current_price", "currentPrice", "evolve")


def test_a_csv_check_lists_the_column_its_mapping_names_but_the_file_lacks(
        app: Flask, sources_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "daily.csv"
    path.write_text(HEADER + "bitcoin,2019-04-20,5296.23,1,2\n")
    declare(sources_file, {"daily": csv_spec(path, {**COLUMNS, "volume_24h_usd": "vol"})})

    result = check(app, "daily")

    assert result.exit_code == 0, result.output
    (row,) = findings(result.output).values()
    assert row.split("│")[4].strip() == "vol"
    assert "rejected: _schema: missing field: vol" in row
    assert "no record could be mapped; the first one holds: close, currency, date, market_cap, volume" \
        in result.output


def test_a_csv_check_resolves_a_known_coin_and_an_unknown_one_without_writing(
        app: Flask, sources_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "daily.csv"
    path.write_text(HEADER + "bitcoin,2019-04-20,5296.23,1,2\nzorkcoin,2019-04-20,0.5,1,2\n"
                    "ripple,2019-04-20,-3,1,2\n")
    declare(sources_file, {"daily": csv_spec(path)})
    with app.app_context():
        db.session.add(Asset(slug="bitcoin", symbol="BTC", name="Bitcoin"))
        db.session.commit()
    before = row_counts(app)

    result = check(app, "daily")

    assert result.exit_code == 0, result.output
    rows = findings(result.output)
    assert "bitcoin (slug of its name or id, existing asset)" in rows["daily.csv:2"]
    assert "zorkcoin (new asset)" in rows["daily.csv:3"]
    assert "rejected: price_usd: Must be greater than or equal to 0" in rows["daily.csv:4"]
    assert "3 record(s): 2 valid, 1 rejected; 1 would be new asset(s). Nothing was written" in result.output
    assert row_counts(app) == before


def test_a_json_check_rejects_a_broken_line_with_its_reason_and_resolves_by_the_ids_it_carries(
        app: Flask, sources_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "ticks.ndjson"
    path.write_text('{"cg": "bitcoin", "ts": "2024-01-01T00:00:00Z", "px": 42409}\n{"cg": "ethereum", "ts": \n')
    declare(sources_file, {"ticks": {"kind": "json", "path": str(path), "format": "ndjson", "ids": "coingecko",
                                     "settle_seconds": 0,
                                     "fields": {"source_asset_id": "cg", "observed_at": "ts", "price_usd": "px"}}})

    result = check(app, "ticks")

    assert result.exit_code == 0, result.output
    rows = findings(result.output)
    assert "bitcoin (slug rule, new asset)" in rows["ticks.ndjson:1"] and "ok" in rows["ticks.ndjson:1"]
    assert "rejected: _schema: ticks.ndjson: line 2 at byte offset 61 is not JSON" in rows["ticks.ndjson:2"]


def test_a_coin_with_an_alias_shows_it_as_known(app: Flask, sources_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "daily.csv"
    path.write_text(HEADER + "btc-daily,2019-04-20,5296.23,1,2\n")
    declare(sources_file, {"daily": csv_spec(path)})
    with app.app_context():
        asset = Asset(slug="bitcoin", symbol="BTC", name="Bitcoin")
        db.session.add(asset)
        db.session.flush()
        db.session.add(AssetAlias(source="daily", source_asset_id="btc-daily", asset_id=asset.id,
                                  match_method="override"))
        db.session.commit()

    result = check(app, "daily")

    assert result.exit_code == 0, result.output
    assert "bitcoin (known alias)" in findings(result.output)["daily.csv:2"]


def test_the_key_never_appears_in_the_output(app: Flask, sources_file: Path, upstream: FakeUpstream) -> None:
    with_password = upstream.coingecko_url.replace("http://", "http://ops:hunter2@")
    declare(sources_file, {"gecko": gecko(upstream, base_url=with_password)})
    upstream.inject("coingecko", "500")

    outputs = [check(app, "gecko").output, check(app, "gecko").output, check(app, "gecko", "--json").output]

    assert "HTTP 500" in outputs[0] and "key: COINGECKO_API_KEY is set" in outputs[1]
    assert all(r["auth_ok"] for r in upstream.requests)  # the key was sent each time
    for output in outputs:
        assert GECKO_KEY not in output and "hunter2" not in output


def test_records_and_json_go_with_check(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["etl", "sources", "--json"])

    assert result.exit_code == 2
    assert "--records and --json go with --check NAME" in result.output


def test_a_secret_quoted_by_the_data_itself_is_masked(app: Flask, sources_file: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # An upstream that echoes the key into a record, here a file that happens to hold it.
    monkeypatch.setitem(app.config, "SECRETS", {"VENDOR_API_KEY": "sk-echoed-4711"})
    path = tmp_path / "daily.csv"
    path.write_text(HEADER + "sk-echoed-4711,2019-04-20,5296.23,1,2\n")
    declare(sources_file, {"daily": csv_spec(path)})

    outputs = [check(app, "daily").output, check(app, "daily", "--json").output]

    assert all("sk-echoed-4711" not in output and "***" in output for output in outputs)


def test_an_unknown_source_fails_in_one_line_naming_the_declared_ones(
        app: Flask, sources_file: Path, tmp_path: Path) -> None:
    declare(sources_file, {"daily": csv_spec(tmp_path / "daily.csv"), "weekly": csv_spec(tmp_path / "w.csv")})

    result = check(app, "nope")

    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [
        f"Error: unknown source 'nope'; {sources_file} declares: daily, weekly"]


@pytest.mark.parametrize(("spec", "line"), [
    ({"kind": "csv", "path": "x.csv", "columns": {"source_asset_id": "currency"}},
     "Error: broken: columns mapping: missing ['observed_at', 'price_usd'], unknown []"),
    ({"kind": "nosuchkind"}, "Error: broken: unknown source kind 'nosuchkind'"),
    ({"kind": "csv", "path": "x.csv", "columns": {}, "max_reject_ratio": 2},
     "Error: broken: max_reject_ratio must be a number from 0 to 1 (1: no budget), not 2"),
])
def test_a_configuration_error_fails_in_one_line(app: Flask, sources_file: Path, spec: dict[str, Any],
                                                 line: str) -> None:
    declare(sources_file, {"broken": spec})

    result = check(app, "broken")

    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [line]


def test_an_upstream_500_fails_in_one_line_after_its_one_request(
        app: Flask, sources_file: Path, upstream: FakeUpstream) -> None:
    declare(sources_file, {"gecko": gecko(upstream)})
    upstream.inject("coingecko", "500", times=5)

    result = check(app, "gecko")

    assert result.exit_code != 0
    assert markets_requests(upstream) == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: gecko: GET http://127.0.0.1:") and line.endswith("last: HTTP 500")
