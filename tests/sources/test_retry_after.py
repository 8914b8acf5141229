"""A provider's Retry-After pauses a source in every process, but never longer than its max_retry_after_seconds."""
from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from email.utils import format_datetime

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kasparro.errors import TransientSourceError
from kasparro.fake_upstream import FakeUpstream
from kasparro.sources import SourceContext, build_source
from kasparro.sources.base import RequestStats
from kasparro.sources.http import HttpClient, parse_retry_after
from kasparro.sources.ratelimit import RedisBudgets

from .conftest import DATA_DIR, FAST_RPM, REDIS_URL, ROOT, WINDOW_SECONDS, upstream_log

A_YEAR = 31_536_000
CAP = 1.5  # max_retry_after_seconds in these tests: small, so a year's pause would show at once
# What a test may add to the cap: the budget's slot margin and a loaded machine's scheduling. A year's
# pause is what these tests rule out; the pause key's own TTL, which no load stretches, is checked exactly.
SLACK = 5.0


def new_process_budgets(key_prefix: str) -> RedisBudgets:
    """Budgets on a Redis connection of their own, as another worker process would hold them."""
    return RedisBudgets(redis.Redis.from_url(REDIS_URL), key_prefix, window_seconds=WINDOW_SECONDS,
                        max_wait_seconds=10)


def gecko_listing(fake: FakeUpstream, key_prefix: str) -> list[object]:
    """Read the CoinGecko listing once, as one run of the source in a fresh process does."""
    spec = {"kind": "coingecko", "base_url": fake.coingecko_url, "per_page": 5, "max_pages": 1,
            "requests_per_minute": FAST_RPM, "max_retry_after_seconds": CAP, "max_retries": 0}
    context = SourceContext(secrets={}, base_dir=ROOT, budget=new_process_budgets(key_prefix))
    return [item for page in build_source("gecko", spec, context).pages(None, 100) for item in page.items]


def test_a_year_long_retry_after_stops_the_source_only_for_max_retry_after_seconds(
        upstream: FakeUpstream, key_prefix: str) -> None:
    upstream.inject("coingecko", 429, retry_after=A_YEAR)

    with pytest.raises(TransientSourceError) as throttled_run:
        gecko_listing(upstream, key_prefix)
    assert len(gecko_listing(upstream, key_prefix)) == 5  # the next run, in another process

    assert "Retry-After 31536000s exceeds the 1.5s cap (max_retry_after_seconds)" in str(throttled_run.value)

    throttled, called_again = (entry["monotonic"] for entry in upstream_log(upstream, "coingecko"))
    assert CAP - 0.1 <= called_again - throttled <= CAP + SLACK


def test_a_year_long_pause_already_in_redis_is_cut_back_to_the_cap(
        upstream: FakeUpstream, redis_client: redis.Redis, key_prefix: str) -> None:
    # As an older release, or a source sharing the group with a larger cap, would have left it.
    pause_key = new_process_budgets(key_prefix).for_source("gecko", FAST_RPM).pause_key
    redis_client.set(pause_key, int(time.time() * 1000) + A_YEAR * 1000, px=A_YEAR * 1000)
    started = time.monotonic()

    assert len(gecko_listing(upstream, key_prefix)) == 5

    assert time.monotonic() - started <= CAP + SLACK
    assert redis_client.pttl(pause_key) <= CAP * 1000


def test_a_pause_is_cut_back_to_the_cap_of_whoever_pauses_next(redis_client: redis.Redis,
                                                                key_prefix: str) -> None:
    budgets = new_process_budgets(key_prefix)
    budgets.for_source("shared", FAST_RPM, max_pause_seconds=A_YEAR).pause(A_YEAR)
    assert budgets.for_source("shared", FAST_RPM).paused_for() > A_YEAR - 10

    budgets.for_source("shared", FAST_RPM, max_pause_seconds=CAP).pause(0.5)

    assert 0 < budgets.for_source("shared", FAST_RPM).paused_for() <= CAP


HTTP_DATES = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(9999, 12, 31),
                          timezones=st.just(timezone.utc)).map(lambda when: format_datetime(when, usegmt=True))
# Retry-After values as providers, proxies and attackers send them; printable on one line, as a header must be.
RETRY_AFTERS = st.one_of(
    st.integers(min_value=-10**12, max_value=10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    HTTP_DATES,
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=40),
    st.text("0123456789", min_size=20, max_size=400),  # more digits than any number holds
)


@settings(max_examples=300, deadline=None)
@given(RETRY_AFTERS)
def test_parse_retry_after_never_raises_and_never_goes_negative(value: str) -> None:
    seconds = parse_retry_after(value)

    assert seconds is None or (seconds >= 0 and not math.isnan(seconds))


@pytest.fixture(scope="module")
def throttling_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(DATA_DIR) as fake:
        yield fake


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(RETRY_AFTERS)
def test_no_retry_after_pauses_longer_than_the_cap_nor_breaks_the_client(
        throttling_upstream: FakeUpstream, budgets: RedisBudgets, redis_client: redis.Redis,
        value: str) -> None:
    budget = budgets.for_source("gecko-429", FAST_RPM, max_pause_seconds=CAP)
    redis_client.delete(budget.pause_key)  # each example starts unpaused
    throttling_upstream.inject("coingecko", 429, retry_after=value)
    client = HttpClient("gecko-429", RequestStats(), budget=budget, max_retries=0, max_retry_after_seconds=CAP)

    with pytest.raises(TransientSourceError, match="429|max_retry_after_seconds"):
        client.get_json(throttling_upstream.coingecko_url + "/coins/markets", {"vs_currency": "usd", "per_page": 1})

    assert budget.paused_for() <= CAP


def test_without_a_shared_budget_a_long_retry_after_is_not_slept_locally(upstream: FakeUpstream) -> None:
    upstream.inject("coingecko", 429, retry_after=A_YEAR)
    client = HttpClient("gecko-local", RequestStats(), max_retry_after_seconds=CAP)
    started = time.monotonic()

    with pytest.raises(TransientSourceError, match="max_retry_after_seconds"):
        client.get_json(upstream.coingecko_url + "/coins/markets", {"vs_currency": "usd", "per_page": 1})
    assert time.monotonic() - started < CAP

