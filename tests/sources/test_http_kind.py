"""The http kind against a local server answering in the shapes of Kraken, Binance, CoinCap and CryptoCompare.

External HTTP is the only thing replaced: the client, its Redis budget and the mapping are the real ones.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from kasparro.errors import PayloadError
from kasparro.fake_upstream import FakeUpstream
from kasparro.pipeline import drift
from kasparro.pipeline.extract import content_hash, payload_json
from kasparro.sources import SourceContext, build_source
from kasparro.sources.base import Page
from kasparro.sources.fields import read_time

from .conftest import FAST_RPM
from .http_kind_upstream import Seen, Upstream, serve

ContextFactory = Callable[..., SourceContext]
KRAKEN_COLUMNS = ["time", "open", "high", "low", "close", "vwap", "volume", "count"]
KLINE_COLUMNS = ["open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "trades",
                 "taker_base", "taker_quote", "ignore"]
HOUR = 3600


@pytest.fixture
def api() -> Iterator[Upstream]:
    yield from serve()


def http_source(context: SourceContext, **spec: Any) -> Any:
    return build_source("venue", {"kind": "http", "requests_per_minute": FAST_RPM, **spec}, context)


def payloads(pages: list[Page]) -> list[dict[str, Any]]:
    return [item.payload for page in pages for item in page.items]


def kraken_spec(api: Upstream, **extra: Any) -> dict[str, Any]:
    return {"base_url": api.url, "path": "/0/public/OHLC", "params": {"pair": "{pair}", "interval": 60},
            "each": {"pair": ["XXBTZUSD", "XETHZUSD"]}, "records_path": "result", "columns": KRAKEN_COLUMNS,
            "error_path": "error", "fields": {"source_asset_id": "$key", "observed_at": "time", "price_usd": "close",
                                              "volume_24h_usd": "volume"},
            "times": {"observed_at": "s"}, **extra}


def kraken_rows(start: int, count: int, price: float = 30000.0) -> list[list[Any]]:
    return [[start + i * HOUR, str(price), str(price + 100), str(price - 100), f"{price + i:.1f}", str(price),
             "12.5", 100 + i] for i in range(count)]


def kraken(api: Upstream, closes: int = 3, first: int = 1688601600) -> None:
    """Answer OHLC as Kraken does: rows from `since` on (all `closes` without it), `last` the newest row's time."""

    def answer(seen: Seen) -> dict[str, Any]:
        rows = [row for row in kraken_rows(first, closes) if row[0] >= int(seen.query.get("since", 0))]
        return {"error": [], "result": {seen.query["pair"]: rows, "last": rows[-1][0] if rows else first}}

    api.json("/0/public/OHLC", answer)


def test_object_keyed_records_take_the_pair_from_key_and_skip_the_sibling_last(api: Upstream,
                                                                                 make_context: ContextFactory) -> None:
    kraken(api)
    source = http_source(make_context(), **kraken_spec(api, each={"pair": ["XXBTZUSD"]}))
    records = payloads(list(source.pages(None, 100)))
    assert len(records) == 3  # `last`, an integer beside the pair, is no record
    assert {r["$key"] for r in records} == {"XXBTZUSD"}
    first = source.to_unified(records[0])
    assert first == {"source_asset_id": "XXBTZUSD", "observed_at": datetime(2023, 7, 6, tzinfo=UTC),
                     "price_usd": "30000.0", "volume_24h_usd": "12.5"}


def test_an_error_array_fails_the_request_instead_of_loading_nothing(api: Upstream,
                                                                     make_context: ContextFactory) -> None:
    api.json("/0/public/OHLC", lambda seen: {"error": ["EGeneral:Invalid arguments"], "result": {}})
    source = http_source(make_context(), **kraken_spec(api))
    with pytest.raises(PayloadError, match="EGeneral:Invalid arguments") as failed:
        list(source.pages(None, 100))
    assert "GET http://127.0.0.1" in str(failed.value) and "at error" in str(failed.value)


def test_an_ok_value_fails_any_other_answer_with_its_message(api: Upstream, make_context: ContextFactory) -> None:
    api.json("/data/v2/histoday", lambda seen: {"Response": "Error", "Message": "fsym is a required param."})
    source = http_source(make_context(), **cryptocompare_spec(api))
    with pytest.raises(PayloadError, match="Response: Error: fsym is a required param."):
        list(source.pages(None, 100))


def klines(api: Upstream, first: int, count: int) -> None:
    """Answer klines as Binance does: hourly rows inside [startTime, endTime], at most `limit`."""
    def answer(seen: Seen) -> list[list[Any]]:
        start, end = int(seen.query["startTime"]), int(seen.query["endTime"])
        times = [first + i * HOUR * 1000 for i in range(count)]
        return [[t, "1.0", "2.0", "0.5", f"{t // 1000 % 1000}.5", "10", t + HOUR * 1000 - 1, "15.5", 7, "1", "1",
                 "0"] for t in times if start <= t <= end][:int(seen.query["limit"])]

    api.json("/api/v3/klines", answer)


def binance_spec(api: Upstream, **extra: Any) -> dict[str, Any]:
    return {"base_url": api.url, "path": "/api/v3/klines",
            "params": {"symbol": "{symbol}", "interval": "1h", "limit": 2}, "each": {"symbol": ["BTCUSDT", "ETHUSDT"]},
            "columns": KLINE_COLUMNS,
            "paginate": {"type": "time", "start_param": "startTime", "end_param": "endTime",
                         "window": 2 * HOUR * 1000, "start": 1688601600000, "end": 1688601600000 + 5 * HOUR * 1000},
            "fields": {"source_asset_id": "$each.symbol", "observed_at": "open_time", "price_usd": "close",
                       "volume_24h_usd": "quote_volume"},
            "times": {"observed_at": "ms"}, **extra}


def test_positional_rows_are_named_by_columns_one_windowed_series_per_symbol(api: Upstream,
                                                                            make_context: ContextFactory) -> None:
    klines(api, 1688601600000, 6)
    source = http_source(make_context(), **binance_spec(api))
    records = payloads(list(source.pages(None, 100)))
    windows = [(s.query["symbol"], s.query["startTime"], s.query["endTime"]) for s in api.requests("/api/v3/klines")]
    assert [w[0] for w in windows] == ["BTCUSDT"] * 3 + ["ETHUSDT"] * 3
    assert len(records) == 12
    row = source.to_unified(records[0])
    assert row == {"source_asset_id": "BTCUSDT", "observed_at": datetime(2023, 7, 6, tzinfo=UTC),
                   "price_usd": "600.5", "volume_24h_usd": "15.5"}
    assert records[0]["taker_quote"] == "1" and "$rest" not in records[0]


def test_values_past_the_named_columns_are_kept_apart(api: Upstream, make_context: ContextFactory) -> None:
    kraken(api, closes=1)
    source = http_source(make_context(), **kraken_spec(api, each={"pair": ["XXBTZUSD"]}, columns=KRAKEN_COLUMNS[:5]))
    record = payloads(list(source.pages(None, 10)))[0]
    assert record["$rest"] == ["30000.0", "12.5", 100]


@pytest.mark.parametrize(("form", "value"), [
    ("iso", "2023-07-06T00:00:00Z"), ("s", 1688601600), ("s", "1688601600"), ("ms", 1688601600000),
    ("%d/%m/%Y %H:%M", "06/07/2023 00:00"),
])
def test_each_time_format_reads_the_same_moment(api: Upstream, make_context: ContextFactory, form: str,
                                                value: Any) -> None:
    api.json("/quotes", lambda seen: {"data": [{"id": "bitcoin", "at": value, "price": 1}]})
    source = http_source(make_context(), base_url=api.url, path="/quotes", records_path="data",
                         fields={"source_asset_id": "id", "observed_at": "at", "price_usd": "price"},
                         times={"observed_at": form})
    moment = source.to_unified(payloads(list(source.pages(None, 10)))[0])["observed_at"]
    expected = "2023-07-06T00:00:00Z" if form == "iso" else datetime(2023, 7, 6, tzinfo=UTC)
    assert moment == expected  # an ISO text is left to validation, which reads it as every kind's


def test_a_time_that_does_not_match_its_format_is_refused() -> None:
    with pytest.raises(ValueError, match="does not match"):
        read_time("observed_at", "2023-07-06", "%d/%m/%Y")
    with pytest.raises(ValueError, match="not an epoch time in ms"):
        read_time("observed_at", "yesterday", "ms")


def test_the_checkpoint_is_sent_back_with_its_overlap_per_series(api: Upstream, make_context: ContextFactory) -> None:
    kraken(api, closes=3)
    spec = kraken_spec(api, params={"pair": "{pair}", "interval": 60, "since": "{since}"},
                       incremental={"from": "observed_at", "unit": "s", "overlap": HOUR})
    source = http_source(make_context(), **spec)
    first = list(source.pages(None, 100))
    newest = 1688601600 + 2 * HOUR
    assert first[-1].cursor["items"] == {"pair=XXBTZUSD": {"checkpoint": "2023-07-06T02:00:00+00:00"},
                                         "pair=XETHZUSD": {"checkpoint": "2023-07-06T02:00:00+00:00"}}
    assert all("since" not in s.query for s in api.requests("/0/public/OHLC"))  # no initial: left out
    api.seen.clear()
    second = payloads(list(source.pages(first[-1].cursor, 100)))
    assert [s.query["since"] for s in api.seen] == [str(newest - HOUR)] * 2
    assert len(second) == 4  # the hour of overlap and the newest, for each pair
    # The overlap is read twice and kept once: the raw layer keys records by the hash of what they hold.
    hashes = {content_hash(payload_json(p)) for p in payloads(first)}
    assert {content_hash(payload_json(p)) for p in second} <= hashes


def test_a_checkpoint_from_the_body_is_sent_back_as_is(api: Upstream, make_context: ContextFactory) -> None:
    kraken(api, closes=3)
    spec = kraken_spec(api, each={"pair": ["XXBTZUSD"]}, params={"pair": "{pair}", "since": "{since}"},
                       incremental={"from": "result.last", "initial": 0})
    source = http_source(make_context(), **spec)
    first = list(source.pages(None, 100))
    assert api.seen[0].query["since"] == "0"
    assert first[-1].cursor["items"] == {"pair=XXBTZUSD": {"checkpoint": 1688601600 + 2 * HOUR}}
    list(source.pages(first[-1].cursor, 100))
    assert api.seen[-1].query["since"] == str(1688601600 + 2 * HOUR)


def test_max_records_ends_the_run_and_the_next_run_goes_on_from_there(api: Upstream,
                                                                      make_context: ContextFactory) -> None:
    klines(api, 1688601600000, 6)
    spec = binance_spec(api, max_records=3, incremental={"unit": "ms", "overlap": 0})
    source = http_source(make_context(), **spec)
    first = list(source.pages(None, 2))
    assert [len(p.items) for p in first] == [2, 1]
    assert first[-1].cursor["items"] == {"symbol=BTCUSDT": {"checkpoint": "2023-07-06T02:00:00+00:00"}}
    api.seen.clear()
    rest = payloads(list(source.pages(first[-1].cursor, 100)))
    assert api.seen[0].query["startTime"] == str(1688601600000 + 2 * HOUR * 1000)  # where the first run stopped
    assert len(rest) == 3  # Binance's overlap (the row at startTime) is loaded once by its hash


def test_a_resumed_run_skips_finished_series_and_goes_on_inside_the_current_one(api: Upstream,
                                                                             make_context: ContextFactory) -> None:
    klines(api, 1688601600000, 6)
    source = http_source(make_context(), **binance_spec(api, incremental={"unit": "ms"}))
    pages = list(source.pages(None, 2))
    # The run stopped after the page holding ETHUSDT's first two rows: BTCUSDT is done, ETHUSDT half read.
    stopped = next(p for p in pages if p.items[0].payload["$each"]["symbol"] == "ETHUSDT").cursor
    assert stopped["done"] == ["symbol=BTCUSDT"]
    api.seen.clear()
    resumed = payloads(list(source.pages(stopped, 100)))
    assert {r["$each"]["symbol"] for r in resumed} == {"ETHUSDT"}
    assert api.seen[0].query["startTime"] == str(1688601600000 + HOUR * 1000)
    assert pages[-1].cursor["done"] == []  # the next run reads every series again


def coincap(api: Upstream, total: int = 5) -> None:
    def answer(seen: Seen) -> dict[str, Any]:
        offset, limit = int(seen.query["offset"]), int(seen.query["limit"])
        data = [{"id": f"coin-{i}", "rank": str(i + 1), "symbol": f"C{i}", "name": f"Coin {i}",
                 "priceUsd": f"{i + 1}.25", "marketCapUsd": "1000.5", "volumeUsd24Hr": "20.5",
                 "changePercent24Hr": "-1.5"} for i in range(offset, min(offset + limit, total))]
        return {"data": data, "timestamp": 1688601600123}

    api.json("/v2/assets", answer)


def coincap_spec(api: Upstream) -> dict[str, Any]:
    return {"base_url": api.url, "path": "/v2/assets", "records_path": "data",
            "paginate": {"type": "offset", "offset_param": "offset", "limit_param": "limit", "limit": 2},
            "fields": {"source_asset_id": "id", "symbol": "symbol", "name": "name", "observed_at": "$body.timestamp",
                       "price_usd": "priceUsd", "market_cap_usd": "marketCapUsd", "volume_24h_usd": "volumeUsd24Hr",
                       "percent_change_24h": "changePercent24Hr"},
            "times": {"observed_at": "ms"}}


def test_offset_paging_with_the_time_from_the_body_like_coincap(api: Upstream, make_context: ContextFactory) -> None:
    coincap(api)
    source = http_source(make_context(), **coincap_spec(api))
    records = payloads(list(source.pages(None, 100)))
    assert [s.query["offset"] for s in api.seen] == ["0", "2", "4"]
    assert [r["id"] for r in records] == [f"coin-{i}" for i in range(5)]
    assert records[0]["$body"] == {"timestamp": 1688601600123}
    assert source.to_unified(records[0])["observed_at"] == datetime(2023, 7, 6, 0, 0, 0, 123000, tzinfo=UTC)


def cryptocompare_spec(api: Upstream, **extra: Any) -> dict[str, Any]:
    return {"base_url": api.url, "path": "/data/v2/histoday",
            "params": {"fsym": "{fsym}", "tsym": "USD", "limit": 2}, "each": {"fsym": ["BTC"]},
            "records_path": "Data.Data", "error_path": "Response", "ok_value": "Success",
            "error_message_path": "Message",
            "paginate": {"type": "cursor", "next_cursor_path": "Data.TimeFrom", "cursor_param": "toTs",
                         "cursor_adjust": -1, "floor_from_checkpoint": True},
            "fields": {"source_asset_id": "$each.fsym", "observed_at": "time", "price_usd": "close",
                       "volume_24h_usd": "volumeto"},
            "times": {"observed_at": "s"}, "incremental": {"unit": "s"}, "max_pages": 4, **extra}


def cryptocompare(api: Upstream, newest: int) -> None:
    """Answer histoday as CryptoCompare does: `limit`+1 days up to `toTs` (default: the newest day), oldest first."""
    day = 86400

    def answer(seen: Seen) -> dict[str, Any]:
        to = int(seen.query.get("toTs", newest)) // day * day
        times = [to - (int(seen.query["limit"]) - i) * day for i in range(int(seen.query["limit"]) + 1)]
        data = [{"time": t, "high": 2, "low": 1, "open": 1, "close": t // day % 100, "volumefrom": 3, "volumeto": 4}
                for t in times]
        return {"Response": "Success", "Data": {"Aggregated": False, "TimeFrom": times[0], "TimeTo": times[-1],
                                                "Data": data}}

    api.json("/data/v2/histoday", answer)


def test_paging_back_in_time_stops_at_max_pages_then_below_the_checkpoint(api: Upstream,
                                                                         make_context: ContextFactory) -> None:
    newest = 1688601600
    cryptocompare(api, newest)
    source = http_source(make_context(), **cryptocompare_spec(api))
    first = list(source.pages(None, 3))
    # Three days a page (limit 2): the next page ends the day before this one's TimeFrom.
    assert [s.query.get("toTs") for s in api.seen] == [None, str(newest - 2 * 86400 - 1),
                                                       str(newest - 5 * 86400 - 1), str(newest - 8 * 86400 - 1)]
    assert len(payloads(first)) == 12
    # Pages come newest first, so the checkpoint (the newest day) is kept only once the series is read.
    assert [p.cursor["items"] for p in first[:-1]] == [{}] * 3
    assert first[-1].cursor["items"] == {"fsym=BTC": {"checkpoint": "2023-07-06T00:00:00+00:00"}}
    cryptocompare(api, newest + 4 * 86400)
    api.seen.clear()
    list(source.pages(first[-1].cursor, 100))
    # Four days later: the second page reaches the checkpoint's day, and the page after would be below it.
    assert [s.query.get("toTs") for s in api.seen] == [None, str(newest + 2 * 86400 - 1)]


def test_post_sends_its_json_body_and_link_headers_page_it(api: Upstream, make_context: ContextFactory) -> None:
    def answer(seen: Seen) -> tuple[int, dict[str, str], Any]:
        page = int(seen.query.get("page", 1))
        link = {"Link": f'<{api.url}/graphql?page={page + 1}>; rel="next"'} if page < 3 else {}
        return 200, link, {"rows": [{"id": f"c{page}", "t": "2023-07-06T00:00:00Z", "p": page}]}

    api.routes["/graphql"] = answer
    source = http_source(make_context(), base_url=api.url, path="/graphql", method="POST",
                         body={"query": "{ quotes(symbol: \"{symbol}\") }", "symbol": "{symbol}", "since": "{since}"},
                         each={"symbol": ["BTC"]}, records_path="rows", paginate={"type": "link"},
                         fields={"source_asset_id": "id", "observed_at": "t", "price_usd": "p"})
    records = payloads(list(source.pages(None, 100)))
    assert [r["id"] for r in records] == ["c1", "c2", "c3"]
    assert {s.method for s in api.seen} == {"POST"}
    # No checkpoint yet: `since` is left out of the body.
    assert api.seen[0].body == {"query": "{ quotes(symbol: \"BTC\") }", "symbol": "BTC"}


def test_an_answer_without_records_at_records_path_fails(api: Upstream, make_context: ContextFactory) -> None:
    api.json("/v2/assets", lambda seen: {"message": "moved"})
    source = http_source(make_context(), **{**coincap_spec(api), "paginate": {"type": "none"}})
    with pytest.raises(PayloadError, match="no list or object at records_path 'data'"):
        list(source.pages(None, 10))


def test_coins_map_pairs_to_canonical_coins_and_refuse_an_unmapped_pair(api: Upstream,
                                                                          make_context: ContextFactory) -> None:
    kraken(api, closes=1)
    source = http_source(make_context(), **kraken_spec(api, coins={"XXBTZUSD": "bitcoin"}))
    btc, eth = (r for r in payloads(list(source.pages(None, 10))))
    assert source.asset_overrides == {("venue", "XXBTZUSD"): "bitcoin"}
    assert source.to_unified(btc)["source_asset_id"] == "XXBTZUSD"
    with pytest.raises(ValueError, match="'XETHZUSD' is not in coins; unmapped pairs are rejected"):
        source.to_unified(eth)


def test_a_row_short_of_its_columns_is_refused_as_values_off_their_names(make_context: ContextFactory) -> None:
    source = http_source(make_context(), **kraken_spec(Upstream(url="http://127.0.0.1:9")))
    # Kraken's row without `open`: the high sits at open's place, the close at low's, ... and `count` has none.
    short = {"$key": "XXBTZUSD", **dict(zip(["time", "open", "high", "low", "close", "vwap", "volume"],
                                            [1688601600, "31000.1", "30000.2", "30500.3", "30400.4", "12.5", 7]))}
    with pytest.raises(ValueError, match=r"row is 1 column\(s\) short of `columns` \(no count\)"):
        source.to_unified(short)


def test_the_expected_schema_follows_the_mapping_so_drift_sees_a_renamed_field(make_context: ContextFactory) -> None:
    source = http_source(make_context(), **kraken_spec(Upstream(url="http://127.0.0.1:9")))
    expected = source.expected_schema()
    # Every named column, mapped or not: a row one column short lacks the last name, which drift sees.
    assert set(expected) == {"$key", "time", "open", "high", "low", "close", "vwap", "volume", "count", "$each", "$body"}
    assert not expected["$each"].required and not expected["$body"].required
    assert expected["time"].types == ("number", "string")
    renamed = [{"$key": "XXBTZUSD", "time": 1688601600 + i, "close_price": f"{i}.5", "volume": "1"} for i in range(20)]
    previous = drift.observe([{**r, "close": r.pop("close_price")} for r in [dict(x) for x in renamed]])
    found = drift.compare(expected, previous, drift.observe(drift.flatten(r, expected) for r in renamed))
    assert [(d.kind, d.field) for d in found if d.field == "close"] in ([("renamed", "close")], [("missing", "close")])


def test_a_dropped_column_is_drift_on_that_column_alone_never_on_the_kinds_own_values(
        make_context: ContextFactory) -> None:
    # `$each` is this kind's, added to every record: it must not be offered as where `count` went.
    source = http_source(make_context(), **kraken_spec(Upstream(url="http://127.0.0.1:9")))
    expected = source.expected_schema()
    whole = [{"$key": "XXBTZUSD", "$each": {"pair": "XXBTZUSD"}, **dict(zip(KRAKEN_COLUMNS, row))}
             for row in kraken_rows(1688601600, 5)]
    short = [{key: value for key, value in record.items() if key != "count"} for record in whole]

    found = drift.compare(expected, drift.observe(drift.flatten(r, expected) for r in whole),
                          drift.observe(drift.flatten(r, expected) for r in short))

    assert [(d.kind, d.field) for d in found] == [("missing", "count")]


def test_declared_coingecko_gives_the_same_rows_as_the_coingecko_kind(upstream: FakeUpstream,
                                                                      make_context: ContextFactory) -> None:
    gecko = build_source("gecko", {"kind": "coingecko", "base_url": upstream.coingecko_url, "per_page": 50,
                                   "max_pages": 3, "requests_per_minute": FAST_RPM}, make_context())
    declared = http_source(
        make_context(), base_url=upstream.coingecko_url, path="/coins/markets",
        params={"vs_currency": "usd", "order": "market_cap_desc", "per_page": 50},
        records_path="", paginate={"type": "page", "page_param": "page", "start": 1, "page_size": 50}, max_pages=3,
        fields={"source_asset_id": "id", "symbol": "symbol", "name": "name", "observed_at": "last_updated",
                "price_usd": "current_price", "market_cap_usd": "market_cap", "volume_24h_usd": "total_volume",
                "percent_change_24h": "price_change_percentage_24h"})
    theirs, ours = payloads(list(gecko.pages(None, 500))), payloads(list(declared.pages(None, 500)))
    assert len(ours) > 50
    assert ours == theirs  # the same raw payloads, so the same content hashes
    assert [declared.to_unified(p) for p in ours] == [gecko.to_unified(p) for p in theirs]


def test_object_keyed_objects_are_records_with_their_key(api: Upstream, make_context: ContextFactory) -> None:
    # Kraken's Ticker: one object per pair, keyed by the pair, beside nothing that is a record.
    api.json("/0/public/Ticker", lambda seen: {"error": [], "result": {
        "XXBTZUSD": {"c": ["30050.5", "0.1"], "v": ["100", "250.5"]},
        "XETHZUSD": {"c": ["1900.1", "2"], "v": ["10", "20"]}}})
    source = http_source(make_context(), base_url=api.url, path="/0/public/Ticker", records_path="result",
                         error_path="error", fields={"source_asset_id": "$key", "observed_at": "$body.none",
                                                     "price_usd": "c"})
    records = payloads(list(source.pages(None, 10)))
    assert [(r["$key"], r["c"][0]) for r in records] == [("XXBTZUSD", "30050.5"), ("XETHZUSD", "1900.1")]
