"""Tell whether a worker process is alive: each worker leaves a short-lived key in Redis while it runs.

The key is the worker's identity (node name and main pid, so a restarted
worker with the same name is a different one). Its holder id is written on the
leases it takes; the reaper resumes a source whose lease lapsed under a worker
whose key has expired.
"""
from __future__ import annotations

import logging
import os
import threading

import redis

logger = logging.getLogger(__name__)

KEY_PREFIX = "kasparro:worker:"

_identity: str | None = None


def identity() -> str | None:
    """Return this worker's id (set in the main process before the pool forks), or None outside a worker."""
    return _identity


def start(client: redis.Redis, nodename: str, ttl: float) -> threading.Event:
    """Name this worker and keep its key alive from a background thread until the returned event is set.

    The key is written every third of `ttl`, so a dead worker is known dead at most `ttl` seconds later.
    """
    global _identity
    _identity = f"{nodename}/{os.getpid()}"
    stop = threading.Event()
    threading.Thread(target=_beat, args=(client, _identity, ttl, stop), name="liveness", daemon=True).start()
    return stop


def _beat(client: redis.Redis, worker_id: str, ttl: float, stop: threading.Event) -> None:
    while True:
        try:
            client.set(KEY_PREFIX + worker_id, 1, px=int(ttl * 1000))
        except redis.RedisError as exc:
            logger.warning("could not write the worker liveness key: %s", exc)
        if stop.wait(ttl / 3):
            client.delete(KEY_PREFIX + worker_id)
            return


def alive(client: redis.Redis, worker_ids: list[str]) -> set[str]:
    """Return which of `worker_ids` have a live key."""
    if not worker_ids:
        return set()
    found = client.mget([KEY_PREFIX + w for w in worker_ids])
    return {w for w, value in zip(worker_ids, found) if value is not None}
