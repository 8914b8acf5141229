"""A declared http source through extract, transform and load: `coins` decide identity above the shipped
overrides, an unmapped pair is rejected, and the overlap a resumed series reads again is loaded once."""
from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from kasparro.db import db
from kasparro.models import Asset, AssetAlias, MarketQuote, RawRecord, RejectedRecord
from tests.pipeline.helpers import declare
from tests.pipeline.inprocess import law_holds, run_in_process

from .http_kind_upstream import Seen, Upstream, serve

HOUR = 3600
FIRST = 1688601600


@pytest.fixture
def api() -> Iterator[Upstream]:
    yield from serve()


@pytest.fixture
def declared(app: Flask, sources_file: Path, api: Upstream, tmp_path: Path) -> Iterator[Upstream]:
    """Declare a Kraken-shaped source, with a shipped override that `coins` must beat; put everything back after."""
    shipped, overrides = sources_file.read_text(), tmp_path / "overrides.csv"
    with open(overrides, "w", newline="") as handle:
        csv.writer(handle).writerows([["source", "source_asset_id", "slug"], ["venue", "XXBTZUSD", "wrapped-bitcoin"]])
    before = app.config["ASSET_OVERRIDES_FILE"]
    app.config["ASSET_OVERRIDES_FILE"] = str(overrides)
    declare(sources_file, {"venue": {
        "kind": "http", "base_url": api.url, "path": "/0/public/OHLC", "requests_per_minute": 60000,
        "params": {"pair": "{pair}", "since": "{since}"}, "each": {"pair": ["XXBTZUSD", "XETHZUSD"]},
        "records_path": "result", "error_path": "error",
        "columns": ["time", "open", "high", "low", "close", "vwap", "volume", "count"],
        "fields": {"source_asset_id": "$key", "observed_at": "time", "price_usd": "close"},
        "times": {"observed_at": "s"}, "incremental": {"unit": "s", "overlap": HOUR},
        "coins": {"XXBTZUSD": "bitcoin"}}})
    try:
        yield api
    finally:
        sources_file.write_text(shipped)
        app.config["ASSET_OVERRIDES_FILE"] = before


def kraken(api: Upstream, hours: int) -> None:
    def answer(seen: Seen) -> dict[str, Any]:
        rows = [[FIRST + i * HOUR, "1", "2", "0.5", f"{30000 + i}.5", "1", "3", 9] for i in range(hours)
                if FIRST + i * HOUR >= int(seen.query.get("since", 0))]
        return {"error": [], "result": {seen.query["pair"]: rows, "last": FIRST}}

    api.json("/0/public/OHLC", answer)


def count(model: Any, *where: Any) -> int:
    return db.session.execute(select(func.count()).select_from(model).where(*where)).scalar_one()


def test_coins_decide_identity_and_an_overlap_is_loaded_once(app: Flask, declared: Upstream) -> None:
    kraken(declared, hours=3)
    first = run_in_process(app, "venue")
    assert (first.status, first.extracted, first.loaded, first.rejected) == ("partial", 6, 3, 3)  # partial: the rejects
    with app.app_context():
        alias = db.session.execute(select(AssetAlias).where(AssetAlias.source_asset_id == "XXBTZUSD")).scalar_one()
        assert (alias.asset.slug, alias.match_method) == ("bitcoin", "override")  # coins beat the shipped row
        reasons = [r.reason for r in db.session.execute(select(RejectedRecord)).scalars()]
        assert len(reasons) == 3 and all("'XETHZUSD' is not in coins" in str(r) for r in reasons)
        assert count(Asset, Asset.slug.in_(["xethzusd", "ethereum"])) == 0  # the unmapped pair made no asset

    kraken(declared, hours=5)
    second = run_in_process(app, "venue")
    assert [s.query["since"] for s in declared.seen[-2:]] == [str(FIRST + HOUR)] * 2  # newest (2h) less 1h
    assert law_holds(second) and second.duplicates == 4  # the two hours of overlap, for each pair
    with app.app_context():
        assert count(MarketQuote, MarketQuote.source == "venue") == 5
        assert count(RawRecord, RawRecord.source == "venue") == 10
