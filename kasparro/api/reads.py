"""Send the API's reads to DATABASE_READ_URL (a replica, or a pooler in front of one), everything else to DATABASE_URL.

A read is a GET, HEAD or OPTIONS request: none of them writes (the writes are POSTs). /health stays on
DATABASE_URL, the database the writes and the workers use: a replica answering says nothing of it.
"""
from __future__ import annotations

from flask import Flask, request

from kasparro.db import use_reads

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PRIMARY_ONLY = ("/health",)


def init_app(app: Flask) -> None:
    """Route the reads of every request (API and status page) when DATABASE_READ_URL is set."""
    if app.config.get("DATABASE_READ_URL"):
        app.before_request(_route_reads)


def _route_reads() -> None:
    if request.method in READ_METHODS and not request.path.startswith(PRIMARY_ONLY):
        use_reads()
