"""Watch the slots a Redis request budget grants, by Redis's own clock.

A slot leaves the budget's sorted set a window after its time, so a test that wants every grant of a
run samples the set while the run goes on. Grant times are what the budget promises to space; the
time a request reaches a server lags its grant by however loaded the machine is.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis

from tests.sampling import sampling


@contextmanager
def granted_slots(client: redis.Redis, key: str, every: float = 0.05) -> Iterator[dict[bytes, float]]:
    """Collect, by member, every slot (ms, Redis time) the sorted set `key` holds while the block runs."""
    seen: dict[bytes, float] = {}
    with sampling(lambda: seen.update(client.zrange(key, 0, -1, withscores=True)), every, join_timeout=10):
        yield seen


def most_in_a_window(slots: dict[bytes, float], window_ms: float) -> int:
    """Return the most slots granted within any `window_ms` (each window starting at a slot)."""
    times = sorted(slots.values())
    return max((sum(1 for t in times if start <= t < start + window_ms) for start in times), default=0)
