"""The sources' HTTP client against the fake upstream: retries, throttling, terminal errors, redaction."""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from kasparro.errors import PayloadError, SourceAuthError, SourceConfigError, TransientSourceError
from kasparro.fake_upstream import FakeUpstream
from kasparro.sources.base import RequestStats, loads_json
from kasparro.sources.http import HttpClient, display_url, parse_retry_after
from kasparro.sources.ratelimit import RedisBudgets

from .conftest import FAST_RPM, upstream_log

USD = {"vs_currency": "usd", "per_page": 5}


def make_client(budgets: RedisBudgets | None, **options: object) -> HttpClient:
    options.setdefault("backoff_seconds", 0.05)
    budget = budgets.for_source("gecko-test", FAST_RPM) if budgets is not None else None
    return HttpClient("gecko-test", RequestStats(), budget=budget, timeout=2, **options)  # type: ignore[arg-type]


def markets(fake: FakeUpstream) -> str:
    return fake.coingecko_url + "/coins/markets"


def gaps(fake: FakeUpstream) -> list[float]:
    times = [entry["monotonic"] for entry in upstream_log(fake, "coingecko")]
    return [later - earlier for earlier, later in zip(times, times[1:])]


def test_success_is_one_counted_request(upstream: FakeUpstream, budgets: RedisBudgets) -> None:
    client = make_client(budgets)
    coins = client.get_json(markets(upstream), USD)
    assert [c["market_cap_rank"] for c in coins] == [1, 2, 3, 4, 5]
    assert (client.stats.requests, client.stats.retries, client.stats.throttled) == (1, 0, 0)


def test_429_waits_out_retry_after_seconds_then_succeeds(upstream: FakeUpstream, budgets: RedisBudgets) -> None:
    upstream.inject("coingecko", 429, retry_after=1)
    client = make_client(budgets)
    started = time.monotonic()
    assert len(client.get_json(markets(upstream), USD)) == 5
    assert time.monotonic() - started >= 1.0
    assert gaps(upstream)[0] >= 1.0
    assert (client.stats.requests, client.stats.retries, client.stats.throttled) == (2, 1, 1)
    assert client.stats.wait_seconds >= 0.9 and len(client.stats.waits) == 1


def test_429_honours_an_http_date_retry_after(upstream: FakeUpstream, budgets: RedisBudgets) -> None:
    upstream.inject("coingecko", 429, retry_after=format_datetime(
        datetime.now(timezone.utc) + timedelta(seconds=2), usegmt=True))
    client = make_client(budgets)
    client.get_json(markets(upstream), USD)
    # HTTP dates have whole seconds, so "in 2 s" means somewhere in (1, 2] s from when it was sent.
    assert gaps(upstream)[0] >= 0.9
    assert client.stats.throttled == 1


def test_429_without_a_shared_budget_waits_locally(upstream: FakeUpstream) -> None:
    upstream.inject("coingecko", 429, retry_after=1)
    client = make_client(None)
    client.get_json(markets(upstream), USD)
    assert gaps(upstream)[0] >= 1.0
    assert client.stats.waits == [1.0]


def test_retry_after_beyond_the_cap_gives_up_and_pauses_every_process_for_the_cap_only(
        upstream: FakeUpstream, budgets: RedisBudgets) -> None:
    upstream.inject("coingecko", 429, retry_after=30)
    client = make_client(budgets, max_retry_after_seconds=5)
    with pytest.raises(TransientSourceError, match=r"Retry-After 30s exceeds the 5s cap \(max_retry_after_seconds\)"):
        client.get_json(markets(upstream), USD)
    assert client.stats.requests == 1 and client.stats.throttled == 1
    assert 4 < budgets.for_source("gecko-test", FAST_RPM).paused_for() <= 5


def test_5xx_is_retried_with_backoff_then_succeeds(upstream: FakeUpstream, budgets: RedisBudgets) -> None:
    upstream.inject("coingecko", 503, times=2)
    client = make_client(budgets, backoff_seconds=0.2)
    assert len(client.get_json(markets(upstream), USD)) == 5
    assert (client.stats.requests, client.stats.retries) == (3, 2)
    assert [entry["status"] for entry in upstream_log(upstream, "coingecko")] == [503, 503, 200]
    # Full jitter: each wait is drawn from [0, base * 2^n].
    assert all(0 <= wait <= cap for wait, cap in zip(client.stats.waits, (0.2, 0.4)))
    assert len(client.stats.waits) == 2


def test_exhausted_retries_raise_transient_with_counts(upstream: FakeUpstream, budgets: RedisBudgets) -> None:
    upstream.inject("coingecko", 500, times=10)
    client = make_client(budgets, max_retries=2)
    with pytest.raises(TransientSourceError, match="after 3 attempts; last: HTTP 500") as caught:
        client.get_json(markets(upstream), USD)
    assert caught.value.transient and caught.value.source == "gecko-test"
    assert (client.stats.requests, client.stats.retries) == (3, 2)
    assert len(upstream_log(upstream, "coingecko")) == 3


def test_timeouts_and_resets_are_retried(upstream: FakeUpstream, budgets: RedisBudgets) -> None:
    upstream.inject("coingecko", "slow", delay=1.0)
    upstream.inject("coingecko", "reset")
    client = make_client(budgets)
    client.timeout = 0.3
    assert len(client.get_json(markets(upstream), USD)) == 5
    assert (client.stats.requests, client.stats.retries) == (3, 2)


@pytest.mark.parametrize(("path", "params", "status"), [("/coins/unknown", USD, 404),
                                                         ("/coins/markets", {"per_page": 5}, 400)])
def test_other_4xx_fail_at_once(upstream: FakeUpstream, budgets: RedisBudgets, path: str,
                                params: dict, status: int) -> None:
    client = make_client(budgets)
    with pytest.raises(SourceConfigError, match=f"HTTP {status}") as caught:
        client.get_json(upstream.coingecko_url + path, params)
    assert not caught.value.transient
    assert client.stats.requests == 1 and len(upstream_log(upstream, "coingecko")) == 1


def test_truncated_json_is_a_payload_error_naming_the_url(upstream: FakeUpstream, budgets: RedisBudgets) -> None:
    upstream.inject("coingecko", "truncated")
    with pytest.raises(PayloadError, match="truncated") as caught:
        make_client(budgets).get_json(markets(upstream), USD)
    assert "/coins/markets?vs_currency=usd" in str(caught.value)


def test_html_is_a_payload_error(upstream: FakeUpstream, budgets: RedisBudgets) -> None:
    upstream.inject("coingecko", "html")
    with pytest.raises(PayloadError, match=r"returned HTML \(text/html.*Bad gateway"):
        make_client(budgets).get_json(markets(upstream), USD)


@pytest.mark.parametrize("header", ["Bearer {key}", "{key}x"])
def test_a_wrongly_sent_key_is_refused_and_never_shown(keyed_upstream: FakeUpstream, budgets: RedisBudgets,
                                                      api_key: str, header: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(budgets, auth_headers={"Authorization": header.format(key=api_key)})
    with pytest.raises(SourceAuthError, match="HTTP 401") as caught:
        client.get_json(keyed_upstream.coinpaprika_url + "/tickers")
    assert api_key not in str(caught.value) and api_key not in caplog.text
    assert client.stats.requests == 1


def test_query_secrets_are_masked_in_errors_and_logs(keyed_upstream: FakeUpstream, budgets: RedisBudgets,
                                                     api_key: str, caplog: pytest.LogCaptureFixture) -> None:
    # Only our loggers: urllib3 logs full URLs at DEBUG, which is why sources send keys in headers.
    caplog.set_level(logging.DEBUG, logger="kasparro")
    keyed_upstream.inject("coingecko", 500)
    client = make_client(budgets, max_retries=0)
    with pytest.raises(TransientSourceError) as caught:
        client.get_json(markets(keyed_upstream), {**USD, "x_cg_demo_api_key": api_key})
    assert "x_cg_demo_api_key=***" in str(caught.value)
    assert api_key not in str(caught.value) and api_key not in caplog.text
    assert "x_cg_demo_api_key=***" in caplog.text


def test_retry_after_and_url_parsing() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert display_url("https://u:p@h.example/x?token=abc", {"page": 2}) == "https://h.example/x?token=***&page=2"


def test_nan_and_infinity_in_a_body_stay_text_so_only_their_record_is_rejected() -> None:
    body = b'[{"id": "a", "price": NaN}, {"id": "b", "price": Infinity}, {"id": "c", "price": -Infinity}]'

    assert [record["price"] for record in loads_json(body)] == ["NaN", "Infinity", "-Infinity"]
