"""The four venues as sources.toml ships them (kind = "http"), through a real worker against the fake upstream.

Each test reads the shipped block and points its base_url at the test's fake upstream (what OFFLINE does with
`offline_path`), so what passes here is the deployment's configuration, not a copy of it.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from kasparro.db import db
from kasparro.fake_upstream.server import FakeUpstream
from kasparro.models import Asset, DriftEvent, MarketQuote, RawRecord, Run, SourceRun
from tests.conftest import PROVIDER_KEYS, ROOT
from tests.pipeline.helpers import declare, quote_count, run_now, shipped

pytestmark = pytest.mark.usefixtures("worker")

UPSTREAM = ROOT / "data" / "upstream"
DAY = 86_400
Row = tuple[str, datetime, Decimal]


def stored(app: Flask, source: str) -> list[Row]:
    """Return every quote of `source` as (asset slug, observed_at, price)."""
    with app.app_context():
        return sorted(db.session.execute(
            select(Asset.slug, MarketQuote.observed_at, MarketQuote.price_usd)
            .join(Asset, Asset.id == MarketQuote.asset_id).where(MarketQuote.source == source)).tuples())


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def recorded_coincap() -> list[Row]:
    listing = load(UPSTREAM / "coincap" / "assets.json")
    return sorted((a["id"], at(listing["timestamp"] / 1000), Decimal(a["priceUsd"])) for a in listing["data"])


def recorded_binance() -> list[Row]:
    return sorted((slug, at(k[0] / 1000), Decimal(k[4])) for symbol, slug in (("BTCUSDT", "bitcoin"),
                                                                               ("ETHUSDT", "ethereum"))
                  for k in load(UPSTREAM / "binance" / "klines" / f"{symbol}_1d.json"))


def recorded_kraken(now: int) -> list[Row]:
    """Return the entries Kraken shows up to its clock `now`: at most the 720 newest per pair."""
    rows = []
    for pair, slug in (("XXBTZUSD", "bitcoin"), ("XETHZUSD", "ethereum")):
        entries = [e for e in load(UPSTREAM / "kraken" / "OHLC" / f"{pair}_1440.json") if e[0] <= now][-720:]
        rows += [(slug, at(e[0]), Decimal(e[4])) for e in entries]
    return sorted(rows)


def recorded_cryptocompare() -> list[Row]:
    return sorted((slug, at(p["time"]), Decimal(str(p["close"]))) for fsym, slug in (("BTC", "bitcoin"),
                                                                                      ("ETH", "ethereum"))
                  for p in load(UPSTREAM / "cryptocompare" / "histoday" / f"{fsym}-USD.json"))


def kraken_now(upstream: FakeUpstream) -> int:
    return upstream.state()["venues"]["kraken"]["current_entry_time"]


def venue_requests(upstream: FakeUpstream, venue: str) -> list[dict[str, Any]]:
    return [r for r in upstream.requests if r["provider"] == venue]


def only(run: Run) -> SourceRun:
    (source_run,) = run.source_runs
    return source_run


# --- every recorded record loads, once ---------------------------------------------------------------------

def test_coincap_loads_every_listed_coin_once_at_the_listing_timestamp(app: Flask, sources_file: Path,
                                                                     upstream: FakeUpstream) -> None:
    declare(sources_file, {"coincap": shipped("coincap", upstream)})

    run = run_now(app)

    assert (run.status, only(run).inserted, only(run).rejected, only(run).requests) == ("success", 250, 0, 3)
    assert stored(app, "coincap") == recorded_coincap()
    assert ("bitcoin", datetime(2025, 2, 9, 17, 44, 6, 711000, UTC), Decimal("96114.08481738689")) \
        in stored(app, "coincap")


def test_binance_loads_both_symbols_whole_history_as_their_canonical_coins(app: Flask, sources_file: Path,
                                                                          upstream: FakeUpstream) -> None:
    declare(sources_file, {"binance_klines": shipped("binance_klines", upstream)})

    run = run_now(app)

    assert (run.status, only(run).inserted, only(run).rejected) == ("success", 1096 + 187, 0)
    assert stored(app, "binance_klines") == recorded_binance()
    assert ("bitcoin", datetime(2018, 7, 7, tzinfo=UTC), Decimal("6856.93017578")) in stored(app, "binance_klines")


def test_kraken_loads_what_its_clock_shows_the_current_day_included(app: Flask, sources_file: Path,
                                                                   upstream: FakeUpstream) -> None:
    declare(sources_file, {"kraken_ohlc": shipped("kraken_ohlc", upstream)})

    run = run_now(app)

    expected = recorded_kraken(kraken_now(upstream))
    assert (run.status, only(run).inserted, only(run).rejected, only(run).requests) == ("success", 750, 0, 2)
    assert stored(app, "kraken_ohlc") == expected
    assert expected[-1][1] == datetime(2021, 4, 10, tzinfo=UTC)  # the current, uncommitted day
    assert ("bitcoin", datetime(2019, 7, 1, tzinfo=UTC), Decimal("10583.1345195")) in stored(app, "kraken_ohlc")


def test_cryptocompare_loads_the_recorded_history_and_no_zero_filled_day(app: Flask, sources_file: Path,
                                                                        upstream: FakeUpstream) -> None:
    declare(sources_file, {"cryptocompare_daily": shipped("cryptocompare_daily", upstream)})

    run = run_now(app)

    assert (run.status, only(run).inserted, only(run).rejected) == ("success", 187 + 187, 0)
    assert stored(app, "cryptocompare_daily") == recorded_cryptocompare()
    assert min(price for _, _, price in stored(app, "cryptocompare_daily")) > 0
    assert ("bitcoin", datetime(2021, 1, 1, tzinfo=UTC), Decimal("29374.15188907")) \
        in stored(app, "cryptocompare_daily")
    # One answer per coin reaches back past 2021-01-01, the first run's floor: no second page.
    assert only(run).requests == 2


# --- incremental: a second run asks only for what is new ---------------------------------------------------

def test_binance_second_run_starts_at_the_newest_kline_and_loads_nothing_new(app: Flask, sources_file: Path,
                                                                           upstream: FakeUpstream) -> None:
    declare(sources_file, {"binance_klines": shipped("binance_klines", upstream)})
    run_now(app)
    sent = len(upstream.requests)

    second = run_now(app)

    asked = [r["query"] for r in upstream.requests[sent:] if r["provider"] == "binance"]
    newest = int(datetime(2021, 7, 6, tzinfo=UTC).timestamp() * 1000)  # both symbols' last recorded kline
    firsts = {symbol: min(int(q["startTime"]) for q in asked if q["symbol"] == symbol)
              for symbol in ("BTCUSDT", "ETHUSDT")}
    assert firsts == {"BTCUSDT": newest, "ETHUSDT": newest}
    # From there to today is two 1,000-day windows per symbol (the first run needed four for BTCUSDT).
    assert (second.status, only(second).requests, only(second).inserted, only(second).updated) == ("success", 4, 0, 0)
    assert quote_count(app, "binance_klines") == 1096 + 187


def test_kraken_polls_since_its_last_and_after_a_week_loads_exactly_the_new_days(app: Flask, sources_file: Path,
                                                                               upstream: FakeUpstream) -> None:
    declare(sources_file, {"kraken_ohlc": shipped("kraken_ohlc", upstream)})
    run_now(app)
    committed = kraken_now(upstream) - DAY  # Kraken's `last`: the day before the current one
    sent = len(upstream.requests)

    unchanged = run_now(app)
    upstream.advance("kraken")
    week = run_now(app)

    asked = [r["query"] for r in upstream.requests if r["provider"] == "kraken"]
    assert [q.get("since") for q in asked[:2]] == [None, None]  # the first run: everything Kraken shows
    assert [q["since"] for q in asked[2:]] == [str(committed)] * 4
    assert (only(unchanged).requests, only(unchanged).inserted, only(unchanged).updated) == (2, 0, 0)
    # The old current day, now committed, is read again unchanged; 7 new days per pair are loaded.
    assert (only(week).inserted, only(week).updated, only(week).rejected) == (14, 0, 0)
    assert stored(app, "kraken_ohlc") == recorded_kraken(kraken_now(upstream))
    assert len(upstream.requests[sent:]) == 4


# --- the venue misbehaves ---------------------------------------------------------------------------------

def test_a_429_and_a_500_are_retried_and_the_run_loads_everything(app: Flask, sources_file: Path,
                                                                 upstream: FakeUpstream) -> None:
    declare(sources_file, {"coincap": shipped("coincap", upstream, backoff_seconds=0.1)})
    upstream.inject("coincap", "429", times=1, retry_after=1)
    upstream.inject("coincap", "500", times=1)

    run = run_now(app)

    source_run = only(run)
    assert (run.status, source_run.inserted, source_run.requests, source_run.throttled) == ("success", 250, 5, 1)
    assert source_run.retries >= 1
    statuses = [r["status"] for r in venue_requests(upstream, "coincap")]
    assert statuses == [429, 500, 200, 200, 200]


def test_a_truncated_answer_fails_the_source_run_and_the_next_run_recovers(app: Flask, sources_file: Path,
                                                                          upstream: FakeUpstream) -> None:
    declare(sources_file, {"coincap": shipped("coincap", upstream)})
    upstream.inject("coincap", "truncated", times=1)

    broken = run_now(app)
    with app.app_context():
        raw_after_failure = db.session.execute(select(RawRecord.id)).all()
    recovered = run_now(app)

    assert (broken.status, only(broken).status) == ("failed", "failed")
    assert "JSON" in only(broken).error
    assert raw_after_failure == []
    assert (recovered.status, only(recovered).inserted) == ("success", 250)
    assert stored(app, "coincap") == recorded_coincap()


def test_a_renamed_field_at_coincap_is_recorded_as_drift(app: Flask, sources_file: Path,
                                                        upstream: FakeUpstream) -> None:
    declare(sources_file, {"coincap": shipped("coincap", upstream, max_pages=1)})
    upstream.inject("coincap", "rename_field", times=1, field="priceUsd", to="price")

    run = run_now(app)

    assert (only(run).rejected, only(run).inserted) == (100, 0)
    with app.app_context():
        events = {(e.field, e.kind, e.new) for e in db.session.execute(
            select(DriftEvent).where(DriftEvent.source == "coincap")).scalars()}
    # Every record lacks priceUsd and holds price instead; the drift names both.
    assert {("priceUsd", "missing", None), ("price", "added", "price")} <= events


def test_a_dropped_binance_column_is_recorded_as_drift(app: Flask, sources_file: Path,
                                                      upstream: FakeUpstream) -> None:
    declare(sources_file, {"binance_klines": shipped("binance_klines", upstream)})
    run_now(app)
    upstream.inject("binance", "drop_column", times=4, index=1)

    run = run_now(app)

    with app.app_context():
        events = {(e.field, e.kind) for e in db.session.execute(
            select(DriftEvent).where(DriftEvent.source == "binance_klines", DriftEvent.run_id == run.id)).scalars()}
    # Column 1 (open) gone: every value after it moved one place left, so the last name, `ignore`, has none.
    assert ("ignore", "missing") in events
    # And no shifted value is loaded as a price: the two re-read klines are rejects, the stored closes stand.
    assert (only(run).rejected, only(run).inserted, only(run).updated) == (2, 0, 0)
    assert stored(app, "binance_klines") == recorded_binance()


def test_kraken_error_array_fails_the_source_run_naming_the_error(app: Flask, sources_file: Path,
                                                                 upstream: FakeUpstream) -> None:
    declare(sources_file, {"kraken_ohlc": shipped("kraken_ohlc", upstream, each={"pair": ["DOGEZUSD"]})})

    run = run_now(app)

    assert (run.status, only(run).status) == ("failed", "failed")
    assert "EQuery:Unknown asset pair" in only(run).error
    assert [r["status"] for r in venue_requests(upstream, "kraken")] == [200]


# --- auth ---------------------------------------------------------------------------------------------------

def test_cryptocompare_key_is_sent_as_api_key_and_shown_nowhere(app: Flask, sources_file: Path,
                                                               upstream: FakeUpstream,
                                                               worker: Any) -> None:
    key = PROVIDER_KEYS["CRYPTOCOMPARE_API_KEY"]
    declare(sources_file, {"cryptocompare_daily": shipped("cryptocompare_daily", upstream)})
    loaded = run_now(app)
    declare(sources_file, {"cryptocompare_daily": shipped("cryptocompare_daily", upstream,
                                                          each={"fsym": ["NOPE"]})})

    refused = run_now(app)

    # The fake logs a secret parameter as *** : it was sent.
    assert [r["query"].get("api_key") for r in venue_requests(upstream, "cryptocompare")] == ["***"] * 3
    assert only(loaded).inserted == 374
    assert "There is no data for the symbol NOPE" in only(refused).error
    assert "api_key=***" in only(refused).error and key not in only(refused).error
    assert key not in Path(worker.log_path).read_text()
