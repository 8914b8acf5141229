"""A client that pages CoinCap, Binance, Kraken and CryptoCompare as the real APIs are paged reads every record once."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from kasparro.fake_upstream import FakeUpstream

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "upstream"
DAY = 86_400
# Each example pages a live server, so a broken server fails on the first bad example rather than
# after minutes of shrinking it. Laws that count requests or move a clock rewind the server themselves.
LAW = settings(max_examples=20, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
               suppress_health_check=[HealthCheck.function_scoped_fixture])


def recorded(*parts: str) -> Any:
    return json.loads(DATA_DIR.joinpath(*parts).read_text())


ASSETS = recorded("coincap", "assets.json")["data"]
KLINES = recorded("binance", "klines", "BTCUSDT_1d.json")
OHLC = recorded("kraken", "OHLC", "XXBTZUSD_1440.json")
HISTODAY = recorded("cryptocompare", "histoday", "BTC-USD.json")


def get(fake: FakeUpstream, venue: str, path: str, **params: Any) -> requests.Response:
    return requests.get(fake.url(venue) + path, params=params, timeout=5)


def klines(fake: FakeUpstream, **params: Any) -> list[list[Any]]:
    resp = get(fake, "binance", "/api/v3/klines", symbol="BTCUSDT", interval="1d", **params)
    assert resp.status_code == 200, resp.text
    return resp.json()


def ohlc(fake: FakeUpstream, pair: str = "XBTUSD", **params: Any) -> dict[str, Any]:
    resp = get(fake, "kraken", "/0/public/OHLC", pair=pair, interval=1440, **params)
    assert resp.status_code == 200
    return resp.json()


def histoday(fake: FakeUpstream, **params: Any) -> dict[str, Any]:
    resp = get(fake, "cryptocompare", "/data/v2/histoday", fsym="BTC", tsym="USD", **params)
    assert resp.status_code == 200
    return resp.json()


# --- CoinCap: offset/limit until a short page ---------------------------------------
@LAW
@given(limit=st.integers(1, 2000))
def test_coincap_offset_paging_reads_every_asset_once_and_stops_on_a_short_page(venues: FakeUpstream,
                                                                                limit: int) -> None:
    venues.reset()
    seen: list[dict[str, Any]] = []
    for _ in range(len(ASSETS) // limit + 2):  # a paging that cannot end fails here, not by timing out
        page = get(venues, "coincap", "/assets", limit=limit, offset=len(seen)).json()["data"]
        seen += page
        if len(page) < limit:
            break
    assert seen == ASSETS
    assert len(venues.requests) == len(ASSETS) // limit + 1


def test_coincap_pages_default_to_100_allow_2000_and_refuse_more(venues: FakeUpstream) -> None:
    body = get(venues, "coincap", "/assets").json()
    assert body["data"] == ASSETS[:100] and isinstance(body["timestamp"], int)
    assert get(venues, "coincap", "/assets", offset=249).json()["data"] == ASSETS[249:]
    assert get(venues, "coincap", "/assets", offset=250).json()["data"] == []
    assert get(venues, "coincap", "/assets", limit=2000).json()["data"] == ASSETS
    refused = get(venues, "coincap", "/assets", limit=2001)
    assert refused.status_code == 400 and "error" in refused.json()


def test_coincap_assets_have_the_documented_keys_with_numbers_as_strings(venues: FakeUpstream) -> None:
    keys = {"id", "rank", "symbol", "name", "supply", "maxSupply", "marketCapUsd", "volumeUsd24Hr", "priceUsd",
            "changePercent24Hr", "vwap24Hr", "explorer"}
    assets = get(venues, "coincap", "/assets", limit=2000).json()["data"]
    assert all(asset.keys() == keys for asset in assets)
    assert [asset["rank"] for asset in assets] == [str(n) for n in range(1, 251)]
    assert all(isinstance(asset["priceUsd"], str) and float(asset["priceUsd"]) > 0 for asset in assets)


# --- Binance: startTime = last open time + 1 until a short page --------------------------------
@LAW
@given(limit=st.integers(5, 1000), first=st.integers(-3, len(KLINES) + 2))
def test_binance_start_time_paging_reads_every_kline_from_the_start_once(venues: FakeUpstream, limit: int,
                                                                         first: int) -> None:
    start = KLINES[0][0] + first * DAY * 1000
    seen: list[list[Any]] = []
    for _ in range(len(KLINES) // limit + 2):  # a paging that cannot end fails here, not by timing out
        page = klines(venues, startTime=start, limit=limit)
        seen += page
        if len(page) < limit:
            break
        start = page[-1][0] + 1
    assert seen == [k for k in KLINES if k[0] >= KLINES[0][0] + first * DAY * 1000]


def test_binance_start_and_end_time_are_inclusive_on_the_open_time(venues: FakeUpstream) -> None:
    opened = KLINES[100][0]
    assert klines(venues, startTime=opened, limit=1) == [KLINES[100]]
    assert klines(venues, startTime=opened + 1, limit=1) == [KLINES[101]]
    assert klines(venues, startTime=KLINES[0][0], endTime=opened) == KLINES[:101]
    assert klines(venues, startTime=KLINES[0][0], endTime=opened - 1) == KLINES[:100]
    assert klines(venues, endTime=opened, limit=3) == KLINES[98:101]
    assert klines(venues, startTime=KLINES[-1][0] + 1) == []


def test_binance_limit_defaults_to_500_most_recent_and_is_capped_at_1000(venues: FakeUpstream) -> None:
    assert len(KLINES) > 1000
    assert klines(venues) == KLINES[-500:]
    assert klines(venues, limit=2) == KLINES[-2:]
    assert klines(venues, startTime=0, limit=5000) == KLINES[:1000]


def test_binance_klines_have_twelve_columns_typed_as_binance_sends_them(venues: FakeUpstream) -> None:
    for row in klines(venues, limit=1000):
        assert len(row) == 12 and isinstance(row[0], int) and row[6] == row[0] + DAY * 1000 - 1
        assert all(isinstance(row[i], str) for i in (1, 2, 3, 4, 5, 7, 9, 10, 11)) and isinstance(row[8], int)


def test_binance_unknown_symbol_is_400_invalid_symbol(venues: FakeUpstream) -> None:
    resp = get(venues, "binance", "/api/v3/klines", symbol="DOGEBTC", interval="1d")
    assert resp.status_code == 400 and resp.json() == {"code": -1121, "msg": "Invalid symbol."}
    missing = get(venues, "binance", "/api/v3/klines", interval="1d")
    assert missing.status_code == 400 and missing.json()["code"] == -1102


# --- Kraken: poll with since = last as the clock moves ----------------------------------
@LAW
@given(waits=st.lists(st.integers(0, 3), min_size=1, max_size=30))
def test_kraken_polling_with_since_last_commits_every_entry_once(venues: FakeUpstream, waits: list[int]) -> None:
    venues.reset()
    committed: list[list[Any]] = []
    since = None
    for wait in [0, *waits]:
        for _ in range(wait):
            venues.advance("kraken")
        body = ohlc(venues, **({} if since is None else {"since": since}))["result"]
        *done, current = body["XXBTZUSD"]
        committed += done
        since = body["last"]
        assert current[0] == since + DAY and (not done or done[-1][0] == since)
    assert committed == OHLC[:OHLC.index(current)]  # the clock starts inside the window: all of it


def test_kraken_since_is_exclusive_and_the_current_entry_always_comes(venues: FakeUpstream) -> None:
    first = ohlc(venues)["result"]
    entries, last = first["XXBTZUSD"], first["last"]
    now = len(entries) - 1
    assert entries == OHLC[:now + 1] and last == OHLC[now - 1][0]
    assert ohlc(venues, since=OHLC[50][0])["result"]["XXBTZUSD"] == OHLC[51:now + 1]
    assert ohlc(venues, since=OHLC[50][0] - 1)["result"]["XXBTZUSD"] == OHLC[50:now + 1]
    assert ohlc(venues, since=last)["result"]["XXBTZUSD"] == [OHLC[now]]
    assert ohlc(venues, since=OHLC[now][0] + DAY)["result"]["XXBTZUSD"] == [OHLC[now]]


def test_kraken_answers_at_most_the_720_most_recent_entries(venues: FakeUpstream) -> None:
    for _ in range(len(OHLC) // 7 + 1):
        venues.advance("kraken")
    entries = ohlc(venues, since=0)["result"]["XXBTZUSD"]
    assert entries == OHLC[-720:] and len(OHLC) > 720


def test_admin_advance_moves_the_kraken_clock_a_week_and_reset_rewinds_it(venues: FakeUpstream) -> None:
    admin = {"headers": venues.admin_headers, "timeout": 5}
    before = ohlc(venues)["result"]["XXBTZUSD"][-1][0]
    state = requests.post(venues.base_url + "/__admin/advance", json={"provider": "kraken"}, **admin).json()
    assert state["venues"]["kraken"]["current_entry_time"] == before + 7 * DAY
    assert ohlc(venues)["result"]["XXBTZUSD"][-1][0] == before + 7 * DAY
    requests.post(venues.base_url + "/__admin/reset", **admin)
    assert ohlc(venues)["result"]["XXBTZUSD"][-1][0] == before


def test_kraken_answers_under_its_own_pair_name(venues: FakeUpstream) -> None:
    assert set(ohlc(venues, pair="XBTUSD")["result"]) == {"XXBTZUSD", "last"}
    assert set(ohlc(venues, pair="XXBTZUSD")["result"]) == {"XXBTZUSD", "last"}
    assert set(ohlc(venues, pair="ETHUSD")["result"]) == {"XETHZUSD", "last"}
    assert ohlc(venues)["error"] == []


def test_kraken_unknown_pair_is_an_error_array_with_http_200(venues: FakeUpstream) -> None:
    resp = get(venues, "kraken", "/0/public/OHLC", pair="DOGEXYZ", interval=1440)
    assert resp.status_code == 200 and resp.json() == {"error": ["EQuery:Unknown asset pair"]}


# --- CryptoCompare: toTs = TimeFrom - 1 backwards until a zero point -------------------------------
@LAW
@given(limit=st.integers(1, 2000))
def test_cryptocompare_backward_paging_reads_every_day_once(venues: FakeUpstream, limit: int) -> None:
    seen: list[dict[str, Any]] = []
    to_ts: dict[str, int] = {}
    for _ in range(len(HISTODAY) // (limit + 1) + 2):  # a paging that cannot end fails here
        data = histoday(venues, limit=limit, **to_ts)["Data"]
        assert len(data["Data"]) == limit + 1 and data["Data"][-1]["time"] == data["TimeTo"]
        traded = [p for p in data["Data"] if p["close"] != 0]
        seen = traded + seen
        if len(traded) < len(data["Data"]):
            break
        to_ts = {"toTs": data["TimeFrom"] - 1}
    assert seen == HISTODAY


def test_cryptocompare_to_ts_includes_its_own_day(venues: FakeUpstream) -> None:
    day = HISTODAY[100]["time"]
    assert histoday(venues, limit=2, toTs=day)["Data"]["Data"] == HISTODAY[98:101]
    assert histoday(venues, limit=2, toTs=day + DAY - 1)["Data"]["Data"] == HISTODAY[98:101]
    assert histoday(venues, limit=2, toTs=day - 1)["Data"]["Data"] == HISTODAY[97:100]
    newest = histoday(venues)
    assert newest["Data"]["Data"] == HISTODAY[-31:] and newest["Response"] == "Success"
    assert {k: newest[k] for k in ("Message", "HasWarning", "Type", "RateLimit")} == {
        "Message": "", "HasWarning": False, "Type": 100, "RateLimit": {}}
    assert newest["Data"]["Aggregated"] is False


def test_cryptocompare_errors_come_as_response_error(venues: FakeUpstream) -> None:
    unknown = get(venues, "cryptocompare", "/data/v2/histoday", fsym="NOPE", tsym="USD")
    too_many = histoday(venues, limit=2001)
    assert unknown.status_code == 200 and unknown.json()["Response"] == "Error" and unknown.json()["Message"]
    assert too_many["Response"] == "Error" and "limit" in too_many["Message"]
    euro = get(venues, "cryptocompare", "/data/v2/histoday", fsym="BTC", tsym="EUR").json()
    assert euro["Response"] == "Error" and euro["ParamWithError"] == "tsym"
