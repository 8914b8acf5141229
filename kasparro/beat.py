"""A beat scheduler that leaves a heartbeat in Redis, so /health can tell whether scheduling is alive.

Run beat with `celery -A kasparro.worker beat -S kasparro.beat:HeartbeatScheduler`.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery.beat import PersistentScheduler

from kasparro.config import HEARTBEAT_KEY, NEXT_RUN_KEY, load_config, read_environment

logger = logging.getLogger(__name__)

# Beat sleeps until the next due task (minutes with a long ETL interval); cap the sleep so the
# heartbeat stays fresh well inside the health check's 120 s staleness threshold.
MAX_SLEEP_SECONDS = 30.0
# Writing every tick would be noise; a few seconds' resolution is plenty.
MIN_WRITE_INTERVAL_SECONDS = 5.0
# The key outlives a dead beat long enough to be read as stale rather than as "never seen".
KEY_TTL_SECONDS = 24 * 3600


# Where celery_app puts REDIS_URL in the Celery configuration: Celery masks names holding "secret".
REDIS_URL_SETTING = "kasparro_secret_redis_url"


class HeartbeatScheduler(PersistentScheduler):
    """Celery's persistent scheduler plus a `kasparro:beat:last_seen` unix time in Redis on each tick."""

    heartbeat_key = HEARTBEAT_KEY
    next_run_key = NEXT_RUN_KEY

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_write = 0.0
        self._redis: redis.Redis | None = None

    def _client(self) -> redis.Redis:
        if self._redis is None:
            url = self.app.conf.get(REDIS_URL_SETTING) or load_config(read_environment())["REDIS_URL"]
            self._redis = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        return self._redis

    def heartbeat(self) -> None:
        """Write the heartbeat unless one was written in the last few seconds."""
        now = time.time()
        if now - self._last_write < MIN_WRITE_INTERVAL_SECONDS:
            return
        try:
            with self._client().pipeline() as pipe:
                pipe.set(self.heartbeat_key, f"{now:.3f}", ex=KEY_TTL_SECONDS)
                pipe.delete(self.next_run_key)
                due = {name: f"{at:.3f}" for name, at in self.next_due(now).items()}
                if due:
                    pipe.hset(self.next_run_key, mapping=due)
                    pipe.expire(self.next_run_key, KEY_TTL_SECONDS)
                pipe.execute()
            self._last_write = now
        except redis.RedisError as exc:
            # A Redis hiccup must not stop scheduling; /health will show the beat as stale.
            logger.warning("could not write the beat heartbeat: %s", exc)

    def next_due(self, now: float) -> dict[str, float]:
        """Return when each schedule entry is next due, as unix times."""
        return {name: now + max(entry.schedule.remaining_estimate(entry.last_run_at).total_seconds(), 0.0)
                for name, entry in self.schedule.items()}

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Run due tasks, leave a heartbeat, and sleep no longer than MAX_SLEEP_SECONDS."""
        interval = super().tick(*args, **kwargs)
        self.heartbeat()
        return min(interval, MAX_SLEEP_SECONDS)
