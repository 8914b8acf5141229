"""The admin faults reach CoinCap, Binance, Kraken and CryptoCompare, each failing in its own shape; the log redacts keys."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import requests

from kasparro.fake_upstream import FakeUpstream

CALLS = {
    "coincap": ("/assets", {"limit": 5}),
    "binance": ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1d", "limit": 5}),
    "kraken": ("/0/public/OHLC", {"pair": "XBTUSD", "interval": 1440}),
    "cryptocompare": ("/data/v2/histoday", {"fsym": "BTC", "tsym": "USD", "limit": 5}),
}
VENUES = list(CALLS)


def is_error_shape(venue: str, body: Any) -> bool:
    """Return whether `body` is `venue`'s own error body."""
    return {
        "coincap": lambda: isinstance(body["error"], str) and isinstance(body["timestamp"], int),
        "binance": lambda: body.keys() == {"code", "msg"} and body["code"] < 0,
        "kraken": lambda: body.keys() == {"error"} and body["error"][0].startswith("E"),
        "cryptocompare": lambda: body["Response"] == "Error" and isinstance(body["Message"], str),
    }[venue]()


def call(fake: FakeUpstream, venue: str, **extra: Any) -> requests.Response:
    path, params = CALLS[venue]
    return requests.get(fake.url(venue) + path, params={**params, **extra}, timeout=5)


def admin_inject(fake: FakeUpstream, **fault: Any) -> requests.Response:
    return requests.post(fake.base_url + "/__admin/faults", json=fault, headers=fake.admin_headers, timeout=5)


@pytest.mark.parametrize("venue", VENUES)
def test_429_through_admin_carries_retry_after_and_the_venue_error_shape(venues: FakeUpstream, venue: str) -> None:
    assert admin_inject(venues, provider=venue, kind="429", retry_after=9).status_code == 201
    resp = call(venues, venue)
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "9"
    assert is_error_shape(venue, resp.json())
    assert call(venues, venue).status_code == 200


@pytest.mark.parametrize("venue", VENUES)
@pytest.mark.parametrize("kind", ["500", "503"])
def test_server_errors_come_in_the_venue_error_shape(venues: FakeUpstream, venue: str, kind: str) -> None:
    venues.inject(venue, kind, times=2)
    answers = [call(venues, venue) for _ in range(3)]
    assert [a.status_code for a in answers] == [int(kind), int(kind), 200]
    assert all(is_error_shape(venue, a.json()) for a in answers[:2])


@pytest.mark.parametrize("venue", VENUES)
def test_truncated_body_is_200_and_half_the_json(venues: FakeUpstream, venue: str) -> None:
    whole = call(venues, venue).content
    venues.inject(venue, "truncated")
    cut = call(venues, venue)
    assert cut.status_code == 200 and whole.startswith(cut.content) and len(cut.content) < len(whole)
    with pytest.raises(ValueError):
        json.loads(cut.content)


@pytest.mark.parametrize(("venue", "field", "to", "records"), [
    ("coincap", "priceUsd", "price", lambda body: body["data"]),
    ("cryptocompare", "close", "price", lambda body: body["Data"]["Data"]),
    ("kraken", "XXBTZUSD", "XBTUSD", lambda body: [body["result"]]),
])
def test_rename_field_renames_it_where_the_venue_keeps_its_records(venues: FakeUpstream, venue: str, field: str,
                                                                   to: str, records: Any) -> None:
    admin_inject(venues, provider=venue, kind="rename_field", field=field, to=to)
    drifted = records(call(venues, venue).json())
    assert drifted and all(to in r and field not in r for r in drifted)
    assert all(field in r for r in records(call(venues, venue).json()))  # one request only


@pytest.mark.parametrize(("venue", "rows"), [
    ("binance", lambda body: body),
    ("kraken", lambda body: body["result"]["XXBTZUSD"]),
])
def test_column_drift_drops_or_adds_a_column_in_every_positional_row(venues: FakeUpstream, venue: str,
                                                                     rows: Any) -> None:
    plain = rows(call(venues, venue).json())
    venues.inject(venue, "drop_column", index=1)
    venues.inject(venue, "add_column", value="extra")
    dropped, added = rows(call(venues, venue).json()), rows(call(venues, venue).json())
    assert [len(r) for r in dropped] == [len(plain[0]) - 1] * len(plain)
    assert [r[:1] + r[2:] for r in plain] == dropped
    assert [r + ["extra"] for r in plain] == added


def test_drift_a_venue_cannot_have_is_refused_at_inject_time(venues: FakeUpstream) -> None:
    assert admin_inject(venues, provider="binance", kind="rename_field", field="open", to="o").status_code == 400
    assert admin_inject(venues, provider="coincap", kind="drop_column", index=0).status_code == 400
    assert admin_inject(venues, provider="kraken", kind="drop_column", index="1").status_code == 400
    assert venues.state()["faults"] == []


@pytest.mark.parametrize(("venue", "wrong"), [
    ("kraken", {"pair": "NOPEUSD"}),
    ("cryptocompare", {"fsym": "NOPE"}),
])
def test_a_200_error_answer_does_not_use_up_a_fault(venues: FakeUpstream, venue: str, wrong: dict[str, str]) -> None:
    venues.inject(venue, "500")
    assert is_error_shape(venue, call(venues, venue, **wrong).json())
    assert call(venues, venue).status_code == 500


def test_request_log_shows_venue_requests_with_secret_params_redacted(venues: FakeUpstream) -> None:
    venues.inject("binance", "503")
    call(venues, "cryptocompare", api_key="cc-secret-key")
    call(venues, "binance", signature="binance-secret-signature")
    call(venues, "kraken", pair="NOPEUSD")
    call(venues, "coincap")
    log = requests.get(venues.base_url + "/__admin/requests", headers=venues.admin_headers, timeout=5).json()
    assert [(r["provider"], r["status"], r["fault"]) for r in log] == [
        ("cryptocompare", 200, None), ("binance", 503, "503"), ("kraken", 200, None), ("coincap", 200, None)]
    assert log[0]["query"]["api_key"] == "***" and log[0]["query"]["fsym"] == "BTC"
    assert log[1]["query"]["signature"] == "***" and log[1]["path"] == "/binance/api/v3/klines"
    assert "cc-secret-key" not in json.dumps(log) and "binance-secret-signature" not in json.dumps(log)


def test_a_data_directory_without_a_venue_folder_serves_the_others_and_404s_it(tmp_path: Path) -> None:
    source = Path(__file__).resolve().parents[2] / "data" / "upstream"
    for folder in ("coinpaprika", "coingecko", "rss", "binance"):
        shutil.copytree(source / folder, tmp_path / folder)
    with FakeUpstream(tmp_path) as fake:
        assert set(fake.venues) == {"binance"}
        assert call(fake, "binance").status_code == 200
        missing = call(fake, "kraken")
        assert missing.status_code == 404 and "kraken" in missing.json()["error"]
