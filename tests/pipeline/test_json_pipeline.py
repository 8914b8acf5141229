"""JSON and NDJSON drops through the whole pipeline: a real worker, the migrated database, the shipped files."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from kasparro.db import db
from kasparro.fake_upstream.server import FakeUpstream
from kasparro.models import Asset, AssetAlias, MarketQuote, RawRecord, RejectedRecord
from kasparro.sources import load_specs
from tests.conftest import ROOT
from tests.pipeline.helpers import declare, quote_count, run_now
from tests.pipeline.test_api_sources import gecko, paprika

pytestmark = pytest.mark.usefixtures("worker")

SHIPPED = load_specs(ROOT / "sources.toml")
# Coins the shipped drops share with the 2019 CSV and both APIs.
SHARED_COINS = ("bitcoin", "ethereum", "tether", "binancecoin", "ripple", "cardano")
FIELDS = {"source_asset_id": "id", "observed_at": "t", "price_usd": "quote.USD.price"}


def sources_by_asset(app: Flask) -> dict[str, set[str]]:
    with app.app_context():
        rows = db.session.execute(select(Asset.slug, MarketQuote.source).distinct()
                                  .join(MarketQuote, MarketQuote.asset_id == Asset.id)).all()
    found: dict[str, set[str]] = {}
    for slug, source in rows:
        found.setdefault(slug, set()).add(source)
    return found


def aliases(app: Flask, source: str) -> dict[str, int]:
    with app.app_context():
        return dict(db.session.execute(select(AssetAlias.source_asset_id, AssetAlias.asset_id)
                                       .where(AssetAlias.source == source)).all())


def test_the_shipped_drops_land_on_the_same_assets_as_the_csv_and_api_sources(
        app: Flask, sources_file: Path, upstream: FakeUpstream) -> None:
    names = ("csv_daily_2019", "json_paprika_style", "ndjson_vendor_ticks")
    declare(sources_file, {**{n: SHIPPED[n] for n in names}, "coinpaprika": paprika(upstream),
                           "coingecko": gecko(upstream)})

    run = run_now(app, timeout=120)

    counts = {s.source: (s.status, s.extracted, s.inserted, s.rejected) for s in run.source_runs}
    assert counts["json_paprika_style"] == ("success", 200, 200, 0)
    assert counts["ndjson_vendor_ticks"] == ("partial", 200, 197, 3)
    every = {*names, "coinpaprika", "coingecko"}
    found = sources_by_asset(app)
    assert {coin: found[coin] for coin in SHARED_COINS} == {coin: every for coin in SHARED_COINS}
    # Every coin the drop shares with an API by id is the API's asset, not a look-alike.
    for drop, api in (("json_paprika_style", "coinpaprika"), ("ndjson_vendor_ticks", "coingecko")):
        mine, theirs = aliases(app, drop), aliases(app, api)
        shared = mine.keys() & theirs.keys()
        assert len(shared) >= 15
        assert {sid: mine[sid] for sid in shared} == {sid: theirs[sid] for sid in shared}


def test_the_ndjson_drops_malformed_lines_are_rejects_with_their_line_numbers(app: Flask,
                                                                              sources_file: Path) -> None:
    declare(sources_file, {"ndjson_vendor_ticks": SHIPPED["ndjson_vendor_ticks"]})

    run_now(app)
    again = run_now(app)

    with app.app_context():
        rejects = db.session.execute(select(RawRecord.position, RejectedRecord.reason)
                                     .join(RejectedRecord, RejectedRecord.raw_record_id == RawRecord.id)
                                     .order_by(RawRecord.id)).all()
    assert [position for position, _ in rejects] == ["vendor_ticks.ndjson:38", "vendor_ticks.ndjson:102",
                                                     "vendor_ticks.ndjson:164"]
    reasons = [json.dumps(reason) for _, reason in rejects]
    assert "line 38" in reasons[0] and "is not JSON" in reasons[0]
    assert "line 164" in reasons[2] and "not an object" in reasons[2]
    (source_run,) = again.source_runs
    assert (source_run.extracted, source_run.inserted) == (0, 0)


def write_ndjson(path: Path, records: list[dict[str, Any]], extra: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + extra)
    return path


def tick(coin: str, day: int, price: float) -> dict[str, Any]:
    return {"id": coin, "t": f"2024-01-{day:02d}T00:00:00Z", "quote": {"USD": {"price": price}}}


def drop_spec(path: Path, **extra: Any) -> dict[str, Any]:
    return {"kind": "json", "path": str(path), "settle_seconds": 0, "ids": "coingecko", "fields": FIELDS, **extra}


def test_an_appended_ndjson_drop_loads_only_the_new_lines(app: Flask, sources_file: Path, tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "t.ndjson", [tick("bitcoin", 1, 42000.5), tick("ethereum", 1, 2300.25)],
                        extra="not json\n")
    declare(sources_file, {"ticks": drop_spec(path)})
    first = run_now(app)
    with path.open("a") as handle:
        handle.write(json.dumps(tick("bitcoin", 2, 43000.5)) + "\n")

    second = run_now(app)

    assert first.status == "partial"
    (source_run,) = second.source_runs
    assert (second.status, source_run.extracted, source_run.inserted) == ("success", 1, 1)
    assert quote_count(app, "ticks") == 3


def test_a_replaced_array_drop_is_read_again_without_duplicating_quotes(app: Flask, sources_file: Path,
                                                                        tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"data": [tick("bitcoin", 1, 42000.5), tick("ethereum", 1, 2300.25)]}))
    declare(sources_file, {"drop": drop_spec(path, records_path="data")})
    run_now(app)
    path.write_text(json.dumps({"data": [tick("bitcoin", 1, 42000.5), tick("ethereum", 1, 2300.25),
                                         tick("tether", 1, 1.0)]}))

    run = run_now(app)

    (source_run,) = run.source_runs
    assert (source_run.extracted, source_run.inserted, source_run.duplicates) == (3, 1, 2)
    assert quote_count(app, "drop") == 3


def test_a_syntax_error_in_an_array_drop_makes_the_source_partial_not_failed(app: Flask, sources_file: Path,
                                                                            tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text("[" + json.dumps(tick("bitcoin", 1, 42000.5)) + ', {"id": oops}, '
                    + json.dumps(tick("ethereum", 1, 2300.25)) + "]")
    declare(sources_file, {"drop": drop_spec(path)})

    run = run_now(app)

    (source_run,) = run.source_runs
    assert (source_run.status, source_run.inserted, source_run.rejected) == ("partial", 1, 1)
    with app.app_context():
        reason = db.session.execute(select(RejectedRecord.reason)).scalar_one()
    assert "JSON syntax error at element 1" in json.dumps(reason)
