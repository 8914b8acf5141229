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


# The budget spaces grants exactly; what the tests observe (a timestamp after the grant, or the
# server's arrival time) lags a grant by scheduling noise, so windows are checked slightly shorter.
TIMING_SLACK = 0.1


def busiest_window(times: list[float], window: float) -> int:
    """Return the most requests seen in any window of `window` seconds (less the timing slack)."""
    window -= TIMING_SLACK
    times = sorted(times)
    return max(sum(1 for t in times if start <= t < start + window) for start in times)


def test_a_process_gets_its_limit_then_waits_for_the_window(redis_client: redis.Redis, key_prefix: str) -> None:
    budget = RedisBudget(redis_client, key_prefix, "solo", RPM, window_seconds=WINDOW_SECONDS)
    started = time.monotonic()
    waits, times = [], []
    for _ in range(LIMIT * 2 + 1):
        waits.append(budget.acquire())
        times.append(time.monotonic())
    assert waits[:LIMIT] == [0.0] * LIMIT
    assert waits[LIMIT] >= 0.9
    assert busiest_window(times, WINDOW_SECONDS) == LIMIT
    assert 2.0 <= time.monotonic() - started < 3.0
    assert 0 < redis_client.pttl(budget.slots_key) <= 4000  # keys expire on their own


def test_a_wait_beyond_the_maximum_is_refused_at_once(redis_client: redis.Redis, key_prefix: str) -> None:
    budget = RedisBudget(redis_client, key_prefix, "tight", 60, window_seconds=WINDOW_SECONDS,
                         max_wait_seconds=0.2)
    budget.acquire()
    started = time.monotonic()
    with pytest.raises(TransientSourceError, match="request budget exhausted") as caught:
        budget.acquire()
    assert time.monotonic() - started < 0.1 and caught.value.source == "tight"


def test_a_pause_is_never_shortened(redis_client: redis.Redis, key_prefix: str) -> None:
    budget = RedisBudget(redis_client, key_prefix, "paused", RPM, window_seconds=WINDOW_SECONDS)
    budget.pause(2)
    budget.pause(0.5)
    assert 1.5 < budget.paused_for() <= 2


def test_the_limit_holds_across_two_processes(upstream: FakeUpstream, key_prefix: str) -> None:
    per_worker = 8
    workers = [hammer(key_prefix, upstream, worker, per_worker) for worker in (1, 2)]
    results = [finish(process) for process in workers]
    log = upstream_log(upstream, "coingecko")
    assert [r["requests"] for r in results] == [per_worker, per_worker] and len(log) == 2 * per_worker
    times = [entry["monotonic"] for entry in log]
    assert busiest_window(times, WINDOW_SECONDS) <= LIMIT
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
    time.sleep(0.2)  # give the other process time to record the pause
    client = HttpClient("hammered", RequestStats(), budget=budgets.for_source("hammered", RPM))
    client.get_json(upstream.coingecko_url + "/coins/markets", {"vs_currency": "usd", "per_page": 1, "page": 2})
    assert finish(other)["throttled"] == 1
    ours = [e["monotonic"] for e in upstream_log(upstream, "coingecko") if e["query"]["page"] == "2"]
    # We never got a 429 ourselves, yet we waited out the provider's Retry-After.
    assert client.stats.throttled == 0 and client.stats.waits and client.stats.waits[0] >= 1.5
    assert ours[0] - throttled_at >= 2.0
