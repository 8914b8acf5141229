"""CryptoCompare `GET /data/v2/histoday?fsym=BTC&tsym=USD&limit=&toTs=` (real base https://min-api.cryptocompare.com).

`{"Response": "Success", "Message": "", "HasWarning": false, "Type": 100, "RateLimit": {}, "Data":
{"Aggregated": false, "TimeFrom", "TimeTo", "Data": [point, ...]}}`, oldest first. It pages backwards:
`toTs` (default now) is the newest time wanted, its day included; the answer holds that day and the
`limit` days before it, so limit + 1 points (`limit` defaults to 30, at most 2000). Days before the
recorded history come back as zero-filled points, as CryptoCompare answers before a coin traded, so a
client stops at the first all-zero point (or at its own floor) and asks next with `toTs = TimeFrom - 1`.
Errors come with HTTP 200 as `{"Response": "Error", "Message": text, ...}`.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .base import Response, Venue, int_param, load_json

DAY = 86_400
DEFAULT_LIMIT = 30
MAX_LIMIT = 2000
TSYMS = ("USD",)


def error(message: str, kind: int = 2, param: str | None = None) -> dict[str, Any]:
    """Build CryptoCompare's error body."""
    body: dict[str, Any] = {"Response": "Error", "Message": message, "HasWarning": False, "Type": kind,
                            "RateLimit": {}, "Data": {}}
    return {**body, "ParamWithError": param} if param else body


def zero_point(time: int) -> dict[str, Any]:
    """Return the point CryptoCompare sends for a day with no trading."""
    return {"time": time, "high": 0, "low": 0, "open": 0, "volumefrom": 0, "volumeto": 0, "close": 0,
            "conversionType": "direct", "conversionSymbol": ""}


class CryptoCompare(Venue):
    """Serve recorded daily points per coin, newest day last."""

    name = "cryptocompare"
    OBJECTS = ("Data", "Data")

    def __init__(self, data_dir: Path) -> None:
        self.points = {p.stem.split("-")[0]: {pt["time"]: pt for pt in load_json(p)}
                       for p in sorted((data_dir / "cryptocompare" / "histoday").glob("*-USD.json"))}

    def error_body(self, status: int) -> Any:
        if status == 429:
            return error("You are over your rate limit please upgrade your account!", kind=99)
        return error("Internal server error" if status == 500 else "Service unavailable", kind=1)

    def failed(self, body: Any) -> bool:
        return isinstance(body, dict) and body.get("Response") == "Error"

    def route(self, endpoint: str, query: Mapping[str, str]) -> Response:
        if endpoint != "/data/v2/histoday":
            return 404, error("Path does not exist", kind=1)
        for name in ("fsym", "tsym"):
            if not query.get(name):
                return 200, error(f"{name} param is empty or null.", param=name)
        fsym, tsym = query["fsym"].upper(), query["tsym"].upper()
        if fsym not in self.points:
            return 200, error(f"There is no data for the symbol {fsym} .", param="fsym")
        if tsym not in TSYMS:
            return 200, error(f"There is no data for the toSymbol {tsym} .", param="tsym")
        series = self.points[fsym]
        newest = max(series)
        try:
            limit, to_ts = int_param(query, "limit", DEFAULT_LIMIT), int_param(query, "toTs", newest)
        except ValueError:
            return 200, error("limit and toTs must be integers.", param="limit")
        assert limit is not None and to_ts is not None
        if limit > MAX_LIMIT:
            return 200, error("limit is larger than max value.", param="limit")
        if limit < 1:
            return 200, error("limit is smaller than min value.", param="limit")
        time_to = min(to_ts - to_ts % DAY, newest)
        times = range(time_to - limit * DAY, time_to + DAY, DAY)
        data = [series.get(t) or zero_point(t) for t in times]
        return 200, {"Response": "Success", "Message": "", "HasWarning": False, "Type": 100, "RateLimit": {},
                     "Data": {"Aggregated": False, "TimeFrom": times[0], "TimeTo": time_to, "Data": data}}

    def describe(self) -> dict[str, Any]:
        return {fsym: len(points) for fsym, points in self.points.items()}
