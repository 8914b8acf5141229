"""A declared http source through extract, transform and load: `coins` decide identity above the shipped
overrides, an unmapped pair is rejected, and the overlap a resumed series reads again is loaded once."""
from __future__ import annotations

import csv
import json
import random
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


def hostile(rng: random.Random, depth: int = 0) -> Any:
    """A record as a broken or hostile API might send it: any JSON, a lone surrogate, nesting past any limit."""
    choice = rng.randrange(5) if depth > 3 else rng.randrange(10)
    if choice == 0:
        return rng.choice([None, True, 0, -1.5e308, 10 ** 40, "", "x" * rng.randrange(1, 5000)])
    if choice == 1:
        return "\ud800" + "x" * rng.randrange(3)
    if choice == 2:
        return [hostile(rng, depth + 1) for _ in range(rng.randrange(4))]
    if choice == 3:
        return {"id": hostile(rng, depth + 1), "t": hostile(rng, depth + 1), "p": hostile(rng, depth + 1)}
    if choice == 4:
        depth_past_limit = rng.randrange(65, 600)
        return json.loads("[" * depth_past_limit + "]" * depth_past_limit)
    if choice == 5:
        return {"id": "bitcoin", "t": rng.choice(["2024-13-01", "", "NaN", 1e20, "\ud83d"]), "p": "1e400"}
    return {"id": rng.choice(["bitcoin", "ethereum", "\ud800", "x" * 300]),
            "t": f"2024-01-{rng.randrange(1, 29):02d}T00:00:00Z", "p": rng.choice([42000, "42000.5", -1, 0, "abc", None, 1e308])}


@pytest.mark.parametrize("seed", range(5))
def test_no_record_an_api_sends_fails_the_source_and_every_one_is_loaded_rejected_or_a_duplicate(
        app: Flask, sources_file: Path, api: Upstream, seed: int) -> None:
    rng = random.Random(seed)
    good = {"id": "bitcoin", "t": "2023-12-31T00:00:00Z", "p": 42000}
    records = [hostile(rng) for _ in range(200)] + [good]
    api.json("/v1/quotes", lambda seen: {"data": records, "keyed": {f"k{i}": r for i, r in enumerate(records)}})
    spec = {"kind": "http", "base_url": api.url, "path": "/v1/quotes", "requests_per_minute": 60000,
            "fields": {"source_asset_id": "id", "observed_at": "t", "price_usd": "p"}}
    shipped = sources_file.read_text()
    try:
        declare(sources_file, {"listed": {**spec, "records_path": "data"}, "keyed": {**spec, "records_path": "keyed"}})
        for name in ("listed", "keyed"):
            run = run_in_process(app, name)
            assert run.status in ("success", "partial"), (name, run.error)
            assert law_holds(run), name
            assert run.loaded >= 1, name  # the good record, whatever its neighbours
    finally:
        sources_file.write_text(shipped)
