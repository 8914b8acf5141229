"""Kraken `GET /0/public/OHLC?pair=XBTUSD&interval=1440&since=` (real base https://api.kraken.com).

`{"error": [], "result": {"XXBTZUSD": [[time_s, "open", "high", "low", "close", "vwap", "volume", count],
...], "last": time_s}}`, keyed by Kraken's own pair name whatever alias was asked for. As Kraken documents,
the answer holds at most the 720 most recent entries (older ones cannot be had, whatever `since`); `since`
is exclusive (entries after it); the last entry is the current, not yet committed frame and is always
present; `last` is the newest committed entry's time, the `since` of the next poll. So a client reads
history incrementally by polling with `since = last` as time passes: here the clock starts on the
FIRST_DAYS-th day every pair has and `advance` moves it on ADVANCE_DAYS days, so a poller sees every entry
once. Errors, an unknown pair among them, come with HTTP 200 as `{"error": [...]}`.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .base import Response, Venue, between, int_param, load_json

WINDOW = 720
FIRST_DAYS = 100
ADVANCE_DAYS = 7
DAY = 86_400
# Only daily entries were derived; another interval is refused (the real API would serve it).
INTERVAL = 1440
# Aliases a client may send, and the pair name Kraken answers under.
PAIRS = {"XBTUSD": "XXBTZUSD", "XXBTZUSD": "XXBTZUSD", "ETHUSD": "XETHZUSD", "XETHZUSD": "XETHZUSD"}


def error(*messages: str) -> dict[str, Any]:
    """Build Kraken's error body."""
    return {"error": list(messages)}


class Kraken(Venue):
    """Serve recorded daily OHLC entries up to a clock that `advance` moves on."""

    name = "kraken"
    OBJECTS = ("result",)
    ROWS = ("result", "*")

    def __init__(self, data_dir: Path) -> None:
        self.entries = {p.stem.split("_")[0]: load_json(p)
                        for p in sorted((data_dir / "kraken" / "OHLC").glob("*_1440.json"))}
        # The clock is a day every pair has reached, so each pair always has a current entry.
        self.start = max(rows[0][0] for rows in self.entries.values()) + (FIRST_DAYS - 1) * DAY
        self.end = min(rows[-1][0] for rows in self.entries.values())
        self.now = self.start

    def error_body(self, status: int) -> Any:
        if status == 429:
            return error("EGeneral:Too many requests")
        return error("EGeneral:Internal error" if status == 500 else "EService:Unavailable")

    def failed(self, body: Any) -> bool:
        return bool(isinstance(body, dict) and body.get("error"))

    def route(self, endpoint: str, query: Mapping[str, str]) -> Response:
        if endpoint != "/0/public/OHLC":
            return 404, error("EGeneral:Unknown method")
        pair = PAIRS.get((query.get("pair") or "").upper())
        if pair is None:
            return 200, error("EQuery:Unknown asset pair")
        try:
            interval, since = int_param(query, "interval", 1), int_param(query, "since", None)
        except ValueError:
            return 200, error("EGeneral:Invalid arguments")
        if interval != INTERVAL:
            return 200, error("EGeneral:Invalid arguments")
        visible = between(self.entries[pair], lambda e: e[0], None, self.now)[-WINDOW:]
        committed = [e for e in visible[:-1] if since is None or e[0] > since]
        return 200, {"error": [], "result": {pair: committed + visible[-1:], "last": visible[-2:][0][0]}}

    def advance(self) -> None:
        self.now = min(self.now + ADVANCE_DAYS * DAY, self.end)

    def reset(self) -> None:
        self.now = self.start

    def describe(self) -> dict[str, Any]:
        return {"current_entry_time": self.now, "last_entry_time": self.end}
