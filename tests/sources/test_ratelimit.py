"""The Redis request budget: a window's limit and a provider's pause hold across separate OS processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import redis

from kasparro.errors import TransientSourceError
from kasparro.fake_upstream import FakeUpstream
from kasparro.sources.base import RequestStats
from kasparro.sources.http import HttpClient
from kasparro.sources.ratelimit import RedisBudget, RedisBudgets

from tests.slots import granted_slots, most_in_a_window

from .conftest import REDIS_URL, ROOT, WINDOW_SECONDS, upstream_log

RPM = 300  # with a one-second window: at most 5 requests in any second
LIMIT = 5

# Runs in a fresh interpreter: its own budget object, Redis connection and HTTP client.
HAMMER = """
import json, sys
import redis
from kasparro.sources.base import RequestStats
from kasparro.sources.http import HttpClient
from kasparro.sources.ratelimit import RedisBudgets
redis_url, prefix, url, worker, count, rpm, window = sys.argv[1:8]
budgets = RedisBudgets(redis.Redis.from_url(redis_url), prefix, window_seconds=float(window))
stats = RequestStats()
client = HttpClient("hammered", stats, budget=budgets.for_source("hammered", float(rpm)), backoff_seconds=0.05)
for _ in range(int(count)):
    client.get_json(url, {"vs_currency": "usd", "per_page": 1, "page": worker})
print(json.dumps({"requests": stats.requests, "throttled": stats.throttled, "waits": stats.waits}))
"""


def hammer(prefix: str, fake: FakeUpstream, worker: int, count: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [REDIS_URL, prefix, fake.coingecko_url + "/coins/markets", str(worker), str(count), str(RPM),
            str(WINDOW_SECONDS)]
    return subprocess.Popen([sys.executable, "-c", HAMMER, *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen[str]) -> dict:
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_a_process_gets_its_limit_then_waits_for_the_window(redis_client: redis.Redis, key_prefix: str) -> None:
    budget = RedisBudget(redis_client, key_prefix, "solo", RPM, window_seconds=WINDOW_SECONDS)
    started = time.monotonic()
    waits = []
    with granted_slots(redis_client, budget.slots_key) as slots:
        for _ in range(LIMIT * 2 + 1):
            waits.append(budget.acquire())
    took = time.monotonic() - started
    assert waits[:LIMIT] == [0.0] * LIMIT
    assert waits[LIMIT] >= 0.9
    # By the grants themselves (Redis's clock), not by when this process woke up after each.
    assert len(slots) == LIMIT * 2 + 1 and most_in_a_window(slots, WINDOW_SECONDS * 1000) == LIMIT
    assert took >= 2.0  # eleven at five a window: two full windows waited, at the least
    assert 0 < redis_client.pttl(budget.slots_key) <= 4000  # keys expire on their own


def test_a_wait_beyond_the_maximum_is_refused_at_once(redis_client: redis.Redis, key_prefix: str) -> None:
    # One request per 30 s window: the next slot is 30 s away, beyond the 5 s a request may wait.
    budget = RedisBudget(redis_client, key_prefix, "tight", 2, window_seconds=30, max_wait_seconds=5)
    budget.acquire()
    started = time.monotonic()
    with pytest.raises(TransientSourceError, match="request budget exhausted") as caught:
        budget.acquire()
    # Refused without waiting: not the 30 s to the slot, nor the 5 s allowed (however loaded the machine).
    assert time.monotonic() - started < 5 and caught.value.source == "tight"


def test_a_pause_is_never_shortened(redis_client: redis.Redis, key_prefix: str) -> None:
    budget = RedisBudget(redis_client, key_prefix, "paused", RPM, window_seconds=WINDOW_SECONDS)
    budget.pause(20)
    budget.pause(0.5)
    assert 10 < budget.paused_for() <= 20


def test_the_limit_holds_across_two_processes(upstream: FakeUpstream, redis_client: redis.Redis,
                                              key_prefix: str) -> None:
    per_worker = 8
    with granted_slots(redis_client, f"{key_prefix}:{{hammered}}:slots") as slots:
        workers = [hammer(key_prefix, upstream, worker, per_worker) for worker in (1, 2)]
        results = [finish(process) for process in workers]
    log = upstream_log(upstream, "coingecko")
    assert [r["requests"] for r in results] == [per_worker, per_worker] and len(log) == 2 * per_worker
    # The grants, by Redis's clock: never more than the limit in a window.
    assert len(slots) == 2 * per_worker and most_in_a_window(slots, WINDOW_SECONDS * 1000) == LIMIT
    times = [entry["monotonic"] for entry in log]
    # Both processes were sending within the same second, so the budget really was shared.
    by_worker = {w: [e["monotonic"] for e in log if e["query"]["page"] == w] for w in ("1", "2")}
    assert any(abs(a - b) < WINDOW_SECONDS for a in by_worker["1"] for b in by_worker["2"])
    # 16 requests at 5 per window need at least three windows after the first, and both waited.
    assert max(times) - min(times) >= 3 * WINDOW_SECONDS
    assert all(r["waits"] for r in results)


def test_a_429_in_one_process_pauses_the_others(upstream: FakeUpstream, budgets: RedisBudgets,
                                                key_prefix: str) -> None:
    upstream.inject("coingecko", 429, retry_after=2)
    other = hammer(key_prefix, upstream, 1, 1)
    deadline = time.monotonic() + 10
    while not any(e["status"] == 429 for e in upstream_log(upstream, "coingecko")):
        assert time.monotonic() < deadline, "the other process never reached the upstream"
        time.sleep(0.02)
    throttled_at = upstream_log(upstream, "coingecko")[0]["monotonic"]
    budget = budgets.for_source("hammered", RPM)
    while budget.paused_for() == 0:  # the other process records the pause in Redis
        assert time.monotonic() < deadline, "the other process never recorded the pause"
        time.sleep(0.02)
    client = HttpClient("hammered", RequestStats(), budget=budget)
    asked = time.monotonic()
    client.get_json(upstream.coingecko_url + "/coins/markets", {"vs_currency": "usd", "per_page": 1, "page": 2})
    assert finish(other)["throttled"] == 1
    ours = [e["monotonic"] for e in upstream_log(upstream, "coingecko") if e["query"]["page"] == "2"]
    # We never got a 429 ourselves, yet we waited out what was left of the provider's Retry-After (set
    # after the 429 arrived; 10 ms for Redis's whole milliseconds).
    assert client.stats.throttled == 0 and client.stats.waits
    assert client.stats.waits[0] >= throttled_at + 2.0 - asked - 0.01
    assert ours[0] - throttled_at >= 2.0
