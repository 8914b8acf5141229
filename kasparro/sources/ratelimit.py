"""Share each source's request budget across every process and machine, through Redis.

The budget is a sliding log: a sorted set of request slots, scored by the time
each slot may be used. A Lua script reserves the earliest slot that keeps at
most `limit` slots inside any `window_seconds` window, reading the clock from
Redis (`TIME`) so workers on different machines agree. A caller sleeps until
its slot, so nobody polls and waiters are served in order. A provider's
`Retry-After` becomes a shared pause: no slot is handed out before it ends,
whichever process got the 429. A pause never outlasts `max_pause_seconds`
(the source's `max_retry_after_seconds`): a longer one, set by a process with a
larger cap or by an older release, is cut back to it when the next request or
pause comes, so no header can stop a source for good.

A window shorter than a minute with a proportional limit is stricter than the
per-minute budget (any minute splits into such windows), which lets tests run
in seconds without changing the guarantee.
"""
from __future__ import annotations

import logging
import math
import time
import uuid
from typing import Any, Protocol

import redis
from redis.commands.core import Script

from kasparro.errors import TransientSourceError

logger = logging.getLogger(__name__)

# The longest a shared pause may hold a source, unless its `max_retry_after_seconds` says otherwise.
DEFAULT_MAX_PAUSE_SECONDS = 120.0

# Reserve the earliest slot at or after now, after any pause (cut back to the max pause
# first), with at most `limit` slots in any window; refuse (-1) when that is further away
# than the max wait.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, window, margin, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local max_pause = tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
if pause > now + max_pause then
  pause = now + max_pause
  redis.call('SET', KEYS[2], pause, 'PX', math.max(max_pause, 1))
end
local at = math.max(now, pause)
local n = redis.call('ZCARD', KEYS[1])
if n >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')
  at = math.max(at, tonumber(oldest[2]) + window + margin)
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then at = math.max(at, tonumber(last[2])) end
if at - now > max_wait then return {-1, at - now} end
redis.call('ZADD', KEYS[1], at, ARGV[5])
redis.call('PEXPIRE', KEYS[1], at - now + window + margin + 1000)
return {0, at - now}
"""

# Extend the shared pause to now + ARGV[1] ms, never shortening it except to now + ARGV[2] ms
# (the max pause); return ms left.
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = math.max(now + tonumber(ARGV[1]), tonumber(redis.call('GET', KEYS[1]) or '0'))
until_ms = math.min(until_ms, now + tonumber(ARGV[2]))
redis.call('SET', KEYS[1], until_ms, 'PX', math.max(until_ms - now, 1))
return until_ms - now
"""

_PAUSE_LEFT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return math.max(tonumber(redis.call('GET', KEYS[1]) or '0') - now, 0)
"""


class Budget(Protocol):
    """What the HTTP client needs from a request budget."""

    def acquire(self) -> float:
        """Block until a request may be sent; return the seconds waited."""
        ...

    def pause(self, seconds: float) -> None:
        """Hold every process's requests for `seconds`."""
        ...


class RedisBudget:
    """A per-source request budget held in Redis and shared by every process."""

    def __init__(self, redis_client: redis.Redis, key_prefix: str, source_name: str,
                 requests_per_minute: float, *, window_seconds: float = 60.0,
                 max_wait_seconds: float = 120.0, margin_seconds: float = 0.05,
                 max_pause_seconds: float = DEFAULT_MAX_PAUSE_SECONDS) -> None:
        if requests_per_minute <= 0 or window_seconds <= 0:
            raise ValueError("requests_per_minute and window_seconds must be positive")
        self.source = source_name
        self.limit = max(1, int(requests_per_minute * window_seconds / 60))
        self.window_ms = int(window_seconds * 1000)
        # Slots are spaced a little wider than the window, so scheduling delays
        # between reserving a slot and sending the request cannot overfill a window.
        self.margin_ms = int(margin_seconds * 1000)
        self.max_wait_ms = int(max_wait_seconds * 1000)
        self.max_pause_ms = _millis(max_pause_seconds)
        # The hash tag keeps a source's keys on one Redis Cluster slot, as Lua requires.
        self.slots_key = f"{key_prefix}:{{{source_name}}}:slots"
        self.pause_key = f"{key_prefix}:{{{source_name}}}:pause"
        self._redis = redis_client
        self._reserve = redis_client.register_script(_RESERVE)
        self._pause = redis_client.register_script(_PAUSE)
        self._pause_left = redis_client.register_script(_PAUSE_LEFT)

    def acquire(self) -> float:
        """Block until a request slot is free and return the seconds waited."""
        started = time.monotonic()
        slept = False
        while True:
            wait_ms = self._reserve_slot(started)
            if wait_ms <= 0:
                break
            time.sleep(wait_ms / 1000)
            slept = True
            # A pause set while we slept (another process's 429) outranks our slot.
            if self._call(self._pause_left, [self.pause_key], []) <= 0:
                break
        if not slept:
            return 0.0
        waited = time.monotonic() - started
        logger.info("request budget wait source=%s wait_seconds=%.3f", self.source, waited,
                    extra={"source": self.source, "wait_seconds": round(waited, 3)})
        return waited

    def _reserve_slot(self, started: float) -> int:
        waited_ms = int((time.monotonic() - started) * 1000)
        args = [self.limit, self.window_ms, self.margin_ms, max(self.max_wait_ms - waited_ms, 0),
                uuid.uuid4().hex, self.max_pause_ms]
        refused, wait_ms = self._call(self._reserve, [self.slots_key, self.pause_key], args)
        if refused:
            raise TransientSourceError(
                f"request budget exhausted: next slot in {wait_ms / 1000:.1f}s, more than the "
                f"{self.max_wait_ms / 1000:.0f}s a request may wait", source=self.source)
        return int(wait_ms)

    def pause(self, seconds: float) -> None:
        """Hold every process's requests to this source for `seconds` (a provider's Retry-After), at most the max pause."""
        wanted = min(_millis(seconds), self.max_pause_ms)
        left = self._call(self._pause, [self.pause_key], [max(wanted, 1), max(self.max_pause_ms, 1)])
        logger.warning("request budget paused source=%s pause_seconds=%.3f", self.source, left / 1000,
                       extra={"source": self.source, "pause_seconds": left / 1000})

    def paused_for(self) -> float:
        """Return the seconds left in the shared pause (0 when none)."""
        return self._call(self._pause_left, [self.pause_key], []) / 1000

    def _call(self, script: Script, keys: list[str], args: list[object]) -> Any:
        try:
            return script(keys=keys, args=args)
        except redis.RedisError as exc:
            # Without the shared budget we cannot prove we stay inside it: try later.
            raise TransientSourceError(f"request budget store unavailable ({type(exc).__name__})",
                                       source=self.source) from None


class RedisBudgets:
    """Hand out per-source budgets that share one Redis client and key prefix."""

    def __init__(self, redis_client: redis.Redis, key_prefix: str = "kasparro:ratelimit", *,
                 window_seconds: float = 60.0, max_wait_seconds: float = 120.0) -> None:
        self.redis = redis_client
        self.key_prefix = key_prefix
        self.window_seconds = window_seconds
        self.max_wait_seconds = max_wait_seconds

    def for_source(self, source_name: str, requests_per_minute: float,
                   max_wait_seconds: float | None = None,
                   max_pause_seconds: float = DEFAULT_MAX_PAUSE_SECONDS) -> RedisBudget:
        """Return the shared budget of `source_name`, whose pauses last at most `max_pause_seconds`."""
        return RedisBudget(self.redis, self.key_prefix, source_name, requests_per_minute,
                           window_seconds=self.window_seconds,
                           max_wait_seconds=self.max_wait_seconds if max_wait_seconds is None
                           else max_wait_seconds, max_pause_seconds=max_pause_seconds)


def _millis(seconds: float) -> int:
    """Return `seconds` as whole milliseconds, at least 0 and at most a year (what Redis and Lua hold exactly)."""
    if not math.isfinite(seconds):
        return 0 if seconds < 0 else _YEAR_MS
    return min(max(int(seconds * 1000), 0), _YEAR_MS)


_YEAR_MS = 365 * 86_400_000
