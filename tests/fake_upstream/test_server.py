"""Specification of the fake CoinPaprika/CoinGecko upstream server."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests

from kasparro.fake_upstream import FakeUpstream

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "upstream"
MARKETS = "/coins/markets"
USD = {"vs_currency": "usd"}


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(DATA_DIR) as fake:
        yield fake


def paprika(fake: FakeUpstream, path: str = "/tickers", **kwargs) -> requests.Response:
    return requests.get(fake.coinpaprika_url + path, timeout=5, **kwargs)


def gecko(fake: FakeUpstream, path: str = MARKETS, params: dict | None = None,
          **kwargs) -> requests.Response:
    return requests.get(fake.coingecko_url + path, params=USD if params is None else params,
                        timeout=5, **kwargs)


def ts(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")


# --- routes --------------------------------------------------------------------
def test_start_returns_base_url_and_ping_answers(upstream: FakeUpstream) -> None:
    assert upstream.base_url.startswith("http://127.0.0.1:")
    resp = gecko(upstream, "/ping", params={})
    assert resp.status_code == 200
    assert resp.json() == {"gecko_says": "(V3) To the Moon!"}


def test_coinpaprika_tickers_serve_the_whole_recorded_snapshot(upstream: FakeUpstream) -> None:
    resp = paprika(upstream)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    coins = resp.json()
    assert len(coins) == 300
    assert [c["rank"] for c in coins[:3]] == [1, 2, 3]
    assert coins[0]["id"] == "btc-bitcoin" and "USD" in coins[0]["quotes"]
    assert paprika(upstream, params={"quotes": "USD"}).json() == coins


def test_coinpaprika_rejects_other_quote_currencies(upstream: FakeUpstream) -> None:
    resp = paprika(upstream, params={"quotes": "EUR"})
    assert resp.status_code == 400
    assert "error" in resp.json()


def test_coinpaprika_coins_list_is_served(upstream: FakeUpstream) -> None:
    coins = paprika(upstream, "/coins").json()
    assert len(coins) == 90 and {"is_active", "is_new", "type"} <= coins[0].keys()


def test_coingecko_markets_paginate_in_rank_order(upstream: FakeUpstream) -> None:
    pages = [gecko(upstream, params={**USD, "order": "market_cap_desc", "per_page": 40,
                                     "page": p}).json() for p in (1, 2, 3, 4)]
    assert [len(p) for p in pages] == [40, 40, 20, 0]
    ranks = [c["market_cap_rank"] for page in pages for c in page]
    assert ranks == sorted(ranks) and len(set(c["id"] for p in pages for c in p)) == 100


def test_coingecko_markets_default_and_maximum_page_size(upstream: FakeUpstream) -> None:
    assert len(gecko(upstream).json()) == 100
    # per_page above 250 is capped, so page 2 of a capped 250-row page is past the end.
    assert gecko(upstream, params={**USD, "per_page": 1000, "page": 2}).json() == []
    assert len(gecko(upstream, params={**USD, "per_page": 10}).json()) == 10


def test_coingecko_markets_require_vs_currency(upstream: FakeUpstream) -> None:
    resp = gecko(upstream, params={})
    assert resp.status_code == 400
    assert "vs_currency" in resp.json()["error"]


def test_unknown_paths_return_json_404(upstream: FakeUpstream) -> None:
    for url in (upstream.base_url + "/nope", upstream.coinpaprika_url + "/global",
                upstream.coingecko_url + "/coins/list"):
        resp = requests.get(url, timeout=5)
        assert resp.status_code == 404
        assert "error" in resp.json()


# --- snapshots over time -----------------------------------------------------------
def test_advance_moves_coinpaprika_last_updated_forward_by_five_minutes(
        upstream: FakeUpstream) -> None:
    before = {c["id"]: c for c in paprika(upstream).json()}
    upstream.advance("coinpaprika")
    after = {c["id"]: c for c in paprika(upstream).json()}
    assert before.keys() == after.keys()
    for coin_id, coin in after.items():
        assert ts(coin["last_updated"]) - ts(before[coin_id]["last_updated"]) == timedelta(minutes=5)


def test_derived_snapshots_nudge_only_every_third_rank(upstream: FakeUpstream) -> None:
    before = {c["id"]: c for c in paprika(upstream).json()}
    upstream.advance("coinpaprika")
    changed = unchanged = 0
    for coin in paprika(upstream).json():
        old = before[coin["id"]]
        new_price, old_price = coin["quotes"]["USD"]["price"], old["quotes"]["USD"]["price"]
        if coin["rank"] % 3 == 0:
            assert new_price == pytest.approx(old_price * (1.001 if coin["rank"] % 2 == 0 else 0.999))
            changed += 1
        else:
            assert new_price == old_price
            unchanged += 1
        assert coin["quotes"]["USD"]["volume_24h"] == old["quotes"]["USD"]["volume_24h"]
    assert changed == 100 and unchanged == 200


def test_advance_switches_coingecko_to_the_next_daily_capture(upstream: FakeUpstream) -> None:
    first = gecko(upstream).json()
    state = upstream.advance("coingecko")
    second = gecko(upstream).json()
    assert state["providers"]["coingecko"]["index"] == 1
    assert state["providers"]["coinpaprika"]["index"] == 0
    assert max(c["last_updated"] for c in second) > max(c["last_updated"] for c in first)


def test_advancing_past_the_last_snapshot_stays_on_it(upstream: FakeUpstream) -> None:
    for _ in range(20):
        state = upstream.advance()
    paprika_state = state["providers"]["coinpaprika"]
    assert paprika_state["index"] == paprika_state["count"] - 1 == 4
    assert paprika_state["snapshot_id"] == "2023-08-11+20m"
    assert state["providers"]["coingecko"]["snapshot_id"] == "2026-04-23T020614Z"


def test_reset_rewinds_snapshots_and_clears_faults_and_log(upstream: FakeUpstream) -> None:
    upstream.advance()
    upstream.inject("coingecko", "500")
    paprika(upstream)
    state = upstream.reset()
    assert {p["index"] for p in state["providers"].values()} == {0}
    assert state["faults"] == [] and upstream.requests == []
    assert gecko(upstream).status_code == 200


def test_advance_every_advances_on_a_timer() -> None:
    with FakeUpstream(DATA_DIR, advance_every=0.1) as fake:
        started = time.monotonic()  # the timer started a moment before: two periods, less that moment
        # Wait for two steps however slow the machine; a timer cannot take them before two periods passed.
        while fake.state()["providers"]["coingecko"]["index"] < 2:
            assert time.monotonic() - started < 30, "the snapshots never advanced"
            time.sleep(0.02)
        assert time.monotonic() - started >= 0.15


# --- faults ----------------------------------------------------------------------
@pytest.mark.parametrize("provider", ["coinpaprika", "coingecko"])
def test_429_carries_retry_after_and_the_provider_error_shape(upstream: FakeUpstream,
                                                              provider: str) -> None:
    upstream.inject(provider, "429", retry_after=7)
    call = paprika if provider == "coinpaprika" else gecko
    resp = call(upstream)
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "7"
    body = resp.json()
    if provider == "coingecko":
        assert body["status"]["error_code"] == 429
    else:
        assert "error" in body
    assert call(upstream).status_code == 200  # consumed by one request


@pytest.mark.parametrize("kind", ["500", "503"])
def test_server_errors_last_for_the_requested_number_of_calls(upstream: FakeUpstream,
                                                              kind: str) -> None:
    upstream.inject("coingecko", kind, times=2)
    statuses = [gecko(upstream).status_code for _ in range(3)]
    assert statuses == [int(kind), int(kind), 200]


def test_faults_are_per_provider_and_can_target_a_path(upstream: FakeUpstream) -> None:
    upstream.inject("coingecko", "500", path=MARKETS)
    assert paprika(upstream).status_code == 200
    assert gecko(upstream, "/ping", params={}).status_code == 200
    assert gecko(upstream).status_code == 500


def test_slow_delays_the_answer(upstream: FakeUpstream) -> None:
    upstream.inject("coinpaprika", "slow", delay=0.6)
    started = time.monotonic()
    assert paprika(upstream).status_code == 200
    assert time.monotonic() - started >= 0.6


def test_slow_trips_a_client_timeout(upstream: FakeUpstream) -> None:
    upstream.inject("coinpaprika", "slow", delay=1.0)
    with pytest.raises(requests.Timeout):
        requests.get(upstream.coinpaprika_url + "/tickers", timeout=0.2)


def test_truncated_body_is_200_but_not_valid_json(upstream: FakeUpstream) -> None:
    upstream.inject("coingecko", "truncated")
    resp = gecko(upstream)
    assert resp.status_code == 200 and resp.content.startswith(b"[{")
    with pytest.raises(ValueError):
        json.loads(resp.content)


def test_html_fault_returns_an_html_page_with_200(upstream: FakeUpstream) -> None:
    upstream.inject("coinpaprika", "html")
    resp = paprika(upstream)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/html")
    assert resp.text.lstrip().startswith("<!DOCTYPE html>")


def test_rename_field_renames_it_in_every_object(upstream: FakeUpstream) -> None:
    upstream.inject("coingecko", "rename_field", field="current_price", to="price")
    coins = gecko(upstream).json()
    assert all("price" in c and "current_price" not in c for c in coins)


def test_drop_field_removes_it_from_every_object(upstream: FakeUpstream) -> None:
    upstream.inject("coinpaprika", "drop_field", field="last_updated")
    coins = paprika(upstream).json()
    assert len(coins) == 300 and all("last_updated" not in c for c in coins)


def test_drop_item_leaves_one_coin_out_of_the_listing(upstream: FakeUpstream) -> None:
    upstream.inject("coinpaprika", "drop_item", id="btc-bitcoin")
    coins = paprika(upstream).json()
    assert len(coins) == 299 and "btc-bitcoin" not in {c["id"] for c in coins}
    assert "btc-bitcoin" in {c["id"] for c in paprika(upstream).json()}  # one request only


def test_type_change_sends_a_number_as_a_string_or_as_null(upstream: FakeUpstream) -> None:
    upstream.inject("coingecko", "type_change", field="current_price")
    upstream.inject("coingecko", "type_change", field="market_cap", to="null")
    as_text, as_null = gecko(upstream).json(), gecko(upstream).json()
    assert all(isinstance(c["current_price"], str) and float(c["current_price"]) >= 0 for c in as_text)
    assert all(c["market_cap"] is None for c in as_null)
    assert all(isinstance(c["current_price"], (int, float)) for c in gecko(upstream).json())


def test_type_change_refuses_a_type_it_cannot_send(upstream: FakeUpstream) -> None:
    with pytest.raises(ValueError, match="type_change"):
        upstream.inject("coingecko", "type_change", field="current_price", to="boolean")


def test_reset_fault_closes_the_connection_without_an_answer(upstream: FakeUpstream) -> None:
    upstream.inject("coingecko", "reset")
    with pytest.raises(requests.ConnectionError):
        gecko(upstream)
    assert upstream.requests[-1]["fault"] == "reset"
    assert upstream.requests[-1]["status"] is None


def test_clear_faults_discards_queued_faults(upstream: FakeUpstream) -> None:
    upstream.inject("coingecko", "500", times=5)
    upstream.clear_faults()
    assert gecko(upstream).status_code == 200


def test_inject_rejects_unknown_kinds_providers_and_missing_params(upstream: FakeUpstream) -> None:
    with pytest.raises(ValueError):
        upstream.inject("coingecko", "teapot")
    with pytest.raises(ValueError):
        upstream.inject("coinmarketcap", "500")
    with pytest.raises(ValueError):
        upstream.inject("coingecko", "rename_field", field="id")


# --- auth ------------------------------------------------------------------------
def test_coinpaprika_without_a_configured_key_accepts_anything(upstream: FakeUpstream) -> None:
    assert paprika(upstream, headers={"Authorization": "Bearer whatever"}).status_code == 200
    assert upstream.requests[-1]["auth_ok"] is True


def test_coinpaprika_key_must_be_sent_bare_in_authorization() -> None:
    with FakeUpstream(DATA_DIR, coinpaprika_key="pp-key") as fake:
        assert paprika(fake, headers={"Authorization": "pp-key"}).status_code == 200
        bearer = paprika(fake, headers={"Authorization": "Bearer pp-key"})
        missing = paprika(fake)
        wrong = paprika(fake, headers={"Authorization": "other"})
        for resp in (bearer, missing, wrong):
            assert resp.status_code == 401 and "error" in resp.json()
        assert [r["auth_ok"] for r in fake.requests] == [True, False, False, False]


def test_coingecko_demo_key_by_header_or_query_param() -> None:
    with FakeUpstream(DATA_DIR, coingecko_key="cg-key", coingecko_plan="demo") as fake:
        assert gecko(fake, headers={"x-cg-demo-api-key": "cg-key"}).status_code == 200
        assert gecko(fake, params={**USD, "x_cg_demo_api_key": "cg-key"}).status_code == 200
        missing = gecko(fake)
        assert missing.status_code == 401
        assert missing.json()["status"]["error_code"] == 10002
        assert gecko(fake, headers={"x-cg-demo-api-key": "nope"}).status_code == 401


def test_coingecko_demo_plan_rejects_a_pro_header() -> None:
    with FakeUpstream(DATA_DIR, coingecko_key="cg-key", coingecko_plan="demo") as fake:
        resp = gecko(fake, headers={"x-cg-pro-api-key": "cg-key"})
        assert resp.status_code == 400
        assert resp.json()["status"]["error_code"] == 10010
        assert fake.requests[-1]["auth_ok"] is False


def test_coingecko_pro_plan_requires_the_pro_header() -> None:
    with FakeUpstream(DATA_DIR, coingecko_key="cg-key", coingecko_plan="pro") as fake:
        assert gecko(fake, headers={"x-cg-pro-api-key": "cg-key"}).status_code == 200
        resp = gecko(fake, headers={"x-cg-demo-api-key": "cg-key"})
        assert resp.status_code == 400
        assert resp.json()["status"]["error_code"] == 10011
        assert gecko(fake).status_code == 401


def test_rejected_requests_do_not_consume_faults() -> None:
    with FakeUpstream(DATA_DIR, coinpaprika_key="pp-key") as fake:
        fake.inject("coinpaprika", "500")
        assert paprika(fake).status_code == 401
        assert paprika(fake, headers={"Authorization": "pp-key"}).status_code == 500


def test_request_log_records_requests_but_never_key_values() -> None:
    with FakeUpstream(DATA_DIR, coingecko_key="cg-secret-key") as fake:
        gecko(fake, params={**USD, "x_cg_demo_api_key": "cg-secret-key", "page": 2})
        entry = fake.requests[-1]
        assert entry["provider"] == "coingecko" and entry["path"].endswith(MARKETS)
        assert entry["status"] == 200 and entry["auth_ok"] is True and entry["fault"] is None
        assert entry["query"]["page"] == "2"
        assert entry["snapshot_id"] == "2026-04-17T020314Z"
        assert isinstance(entry["monotonic"], float) and entry["wall"] > 1.7e9
        assert "cg-secret-key" not in json.dumps(fake.requests)


# --- admin endpoints ---------------------------------------------------------------
def test_admin_state_and_advance(upstream: FakeUpstream) -> None:
    state = requests.get(upstream.base_url + "/__admin/state", headers=upstream.admin_headers, timeout=5).json()
    assert state["providers"]["coinpaprika"]["snapshot_id"] == "2023-08-11"
    assert state["providers"]["coingecko"]["count"] == 7
    resp = requests.post(upstream.base_url + "/__admin/advance", json={"provider": "coinpaprika"},
                         headers=upstream.admin_headers, timeout=5)
    assert resp.status_code == 200
    assert resp.json()["providers"]["coinpaprika"]["index"] == 1
    assert resp.json()["providers"]["coingecko"]["index"] == 0
    resp = requests.post(upstream.base_url + "/__admin/advance", headers=upstream.admin_headers, timeout=5)
    assert resp.json()["providers"]["coingecko"]["index"] == 1


def test_admin_faults_queue_and_clear(upstream: FakeUpstream) -> None:
    url = upstream.base_url + "/__admin/faults"
    resp = requests.post(url, json={"provider": "coingecko", "kind": "429", "times": 2,
                                    "retry_after": 3}, headers=upstream.admin_headers, timeout=5)
    assert resp.status_code == 201
    assert resp.json()["queued"] == {"provider": "coingecko", "kind": "429", "remaining": 2,
                                     "retry_after": 3}
    assert gecko(upstream).status_code == 429
    assert requests.delete(url, headers=upstream.admin_headers, timeout=5).json() == {"faults": []}
    assert gecko(upstream).status_code == 200
    bad = requests.post(url, json={"provider": "coingecko", "kind": "teapot"}, headers=upstream.admin_headers,
                        timeout=5)
    assert bad.status_code == 400 and "error" in bad.json()


def test_admin_requests_and_reset(upstream: FakeUpstream) -> None:
    paprika(upstream)
    log = requests.get(upstream.base_url + "/__admin/requests", headers=upstream.admin_headers, timeout=5).json()
    assert [(r["provider"], r["status"]) for r in log] == [("coinpaprika", 200)]
    requests.post(upstream.base_url + "/__admin/advance", headers=upstream.admin_headers, timeout=5)
    state = requests.post(upstream.base_url + "/__admin/reset", headers=upstream.admin_headers, timeout=5).json()
    assert {p["index"] for p in state["providers"].values()} == {0}
    assert requests.get(upstream.base_url + "/__admin/requests", headers=upstream.admin_headers,
                        timeout=5).json() == []


def test_stop_releases_the_port() -> None:
    fake = FakeUpstream(DATA_DIR)
    url = fake.start()
    fake.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/coingecko/api/v3/ping", timeout=2)


def test_coingecko_market_chart_range_serves_recorded_points_between_from_and_to(upstream: FakeUpstream) -> None:
    start, end = 1769904000, 1772323199  # February 2026, in seconds
    body = gecko(upstream, "/coins/bitcoin/market_chart/range", {**USD, "from": start, "to": end}).json()
    recorded = json.loads((DATA_DIR / "coingecko" / "market_chart" / "bitcoin.json").read_text())

    assert set(body) == {"prices", "market_caps", "total_volumes"}
    assert body["prices"] == [p for p in recorded["prices"] if start * 1000 <= p[0] <= end * 1000]
    assert 20 <= len(body["prices"]) == len(body["market_caps"]) == len(body["total_volumes"])
    assert all(isinstance(ms, int) and value > 0 for ms, value in body["prices"])


def test_coingecko_market_chart_range_answers_like_the_real_api_when_asked_wrongly(upstream: FakeUpstream) -> None:
    path = "/coins/{}/market_chart/range"
    listed_without_chart = gecko(upstream, path.format("figure-heloc"), {**USD, "from": 0, "to": 1}).json()

    assert gecko(upstream, path.format("no-such-coin"), {**USD, "from": 0, "to": 1}).status_code == 404
    assert gecko(upstream, path.format("bitcoin"), {**USD, "from": "yesterday", "to": 1}).status_code == 400
    assert gecko(upstream, path.format("bitcoin"), {"from": 0, "to": 1}).status_code == 400
    assert listed_without_chart == {"prices": [], "market_caps": [], "total_volumes": []}
