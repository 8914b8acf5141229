"""Binance spot `GET /api/v3/klines?symbol=&interval=1d&startTime=&endTime=&limit=` (real base https://api.binance.com).

An array of klines `[open_ms, "open", "high", "low", "close", "volume", close_ms, "quote_volume", trades,
"taker_base", "taker_quote", "0"]`, oldest first, each identified by its open time. `limit` defaults to 500
and is capped at 1000. With `startTime` the page holds the first `limit` klines opening at or after it (and
at or before `endTime` when sent); with only `endTime`, the last `limit` opening at or before it; with
neither, the most recent `limit`. So a client pages with `startTime = last open time + 1` until a page is
shorter than `limit`. Errors are `{"code": <negative int>, "msg": text}` with HTTP 400.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .base import Response, Venue, between, int_param, load_json

DEFAULT_LIMIT = 500
MAX_LIMIT = 1000
# Only daily klines were derived; any other interval is refused (the real API would serve it).
INTERVALS = ("1d",)


def error(code: int, message: str) -> dict[str, Any]:
    """Build Binance's error body."""
    return {"code": code, "msg": message}


class Binance(Venue):
    """Serve recorded daily klines per symbol."""

    name = "binance"
    ROWS = ()

    def __init__(self, data_dir: Path) -> None:
        self.klines = {p.stem.split("_")[0]: load_json(p)
                       for p in sorted((data_dir / "binance" / "klines").glob("*_1d.json"))}

    def error_body(self, status: int) -> Any:
        if status == 429:
            return error(-1003, "Too much request weight used; current limit is 6000 request weight per "
                                "1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.")
        if status == 500:
            return error(-1000, "An unknown error occurred while processing the request.")
        return error(-1001, "Internal error; unable to process your request. Please try again.")

    def route(self, endpoint: str, query: Mapping[str, str]) -> Response:
        if endpoint != "/api/v3/klines":
            return 404, error(-1000, "Not found")
        for name in ("symbol", "interval"):
            if not query.get(name):
                return 400, error(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
        if query["symbol"] not in self.klines:
            return 400, error(-1121, "Invalid symbol.")
        if query["interval"] not in INTERVALS:
            return 400, error(-1120, "Invalid interval.")
        try:
            start, end = int_param(query, "startTime", None), int_param(query, "endTime", None)
            limit = int_param(query, "limit", DEFAULT_LIMIT)
        except ValueError:
            return 400, error(-1100, "Illegal characters found in a parameter.")
        assert limit is not None
        limit = max(1, min(limit, MAX_LIMIT))
        rows = between(self.klines[query["symbol"]], lambda k: k[0], start, end)
        return 200, rows[:limit] if start is not None else rows[-limit:]

    def describe(self) -> dict[str, Any]:
        return {symbol: len(rows) for symbol, rows in self.klines.items()}
