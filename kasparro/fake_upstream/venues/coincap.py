"""CoinCap v2 `GET /assets?limit=&offset=` (real base https://api.coincap.io/v2), from one recorded listing.

`{"data": [asset, ...], "timestamp": ms}`, every number a string, in rank order. Paging is offset/limit:
`limit` defaults to 100 and may be at most 2000, `offset` to 0; a page shorter than `limit` (or empty) is
the last. Errors are `{"error": text, "timestamp": ms}`.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .base import Response, Venue, int_param, load_json

DEFAULT_LIMIT = 100
MAX_LIMIT = 2000


class CoinCap(Venue):
    """Serve the recorded `/assets` listing a page at a time."""

    name = "coincap"
    OBJECTS = ("data",)

    def __init__(self, data_dir: Path) -> None:
        recorded = load_json(data_dir / "coincap" / "assets.json")
        self.assets: list[dict[str, Any]] = recorded["data"]
        self.timestamp: int = recorded["timestamp"]

    def _error(self, message: str) -> dict[str, Any]:
        return {"error": message, "timestamp": self.timestamp}

    def error_body(self, status: int) -> Any:
        if status == 429:
            return self._error("Too many requests")
        return self._error("Internal server error" if status == 500 else "Service unavailable")

    def route(self, endpoint: str, query: Mapping[str, str]) -> Response:
        if endpoint != "/assets":
            return 404, self._error("Not found")
        try:
            limit = int_param(query, "limit", DEFAULT_LIMIT)
            offset = int_param(query, "offset", 0)
        except ValueError:
            return 400, self._error("limit and offset must be integers")
        assert limit is not None and offset is not None
        if not 1 <= limit <= MAX_LIMIT or offset < 0:
            return 400, self._error(f"limit must be 1 to {MAX_LIMIT} and offset at least 0")
        return 200, {"data": self.assets[offset:offset + limit], "timestamp": self.timestamp}

    def describe(self) -> dict[str, Any]:
        return {"records": len(self.assets), "timestamp": self.timestamp}
