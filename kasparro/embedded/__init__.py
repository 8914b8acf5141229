"""Run private PostgreSQL and Redis servers on free ports under a directory of our own.

Fault tests restart them mid-run without touching the machine's shared servers, and a laptop
without either can run the whole system on them. Only the standard library is used.
"""
from __future__ import annotations

from kasparro.embedded.base import EmbeddedError, StopMode, find_pg_bin_dir, find_redis_server, free_port
from kasparro.embedded.postgres import PostgresServer
from kasparro.embedded.redis import RedisServer

__all__ = ["EmbeddedError", "PostgresServer", "RedisServer", "StopMode", "find_pg_bin_dir", "find_redis_server",
           "free_port"]
