"""Own the one Redis client of a process: budgets, liveness keys and markers all go through it."""
from __future__ import annotations

import redis
from flask import Flask, current_app


def init_app(app: Flask) -> None:
    """Create the client for REDIS_URL; connections open lazily, and a forked process opens its own."""
    # Bounded timeouts: a Redis outage must fail a call, never hang a task or a request.
    app.extensions["redis"] = redis.Redis.from_url(app.config["REDIS_URL"], socket_connect_timeout=5,
                                                   socket_timeout=10, health_check_interval=30)


def client() -> redis.Redis:
    """Return the current app's Redis client."""
    return current_app.extensions["redis"]
