"""Provider-specific routes, authentication and error bodies."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .snapshots import SnapshotSeries
from .venues import VENUE_PREFIXES

PREFIXES = {"coinpaprika": "/coinpaprika/v1", "coingecko": "/coingecko/api/v3", **VENUE_PREFIXES}
# Query parameters that carry secrets; their values never reach a log (CryptoCompare's `api_key`,
# CoinCap's `apiKey`, a Binance `signature`).
SECRET_PARAMS = frozenset({"x_cg_demo_api_key", "x_cg_pro_api_key", "api_key", "apiKey", "signature"})
CG_MAX_PER_PAGE = 250
CG_DEFAULT_PER_PAGE = 100

Response = tuple[int, Any]


def split_provider(path: str) -> tuple[str | None, str]:
    """Return the provider owning `path` and the endpoint part after its prefix."""
    for provider, prefix in PREFIXES.items():
        if path == prefix or path.startswith(prefix + "/"):
            return provider, path[len(prefix):] or "/"
    return None, path


def paprika_error(message: str) -> dict[str, str]:
    """Build CoinPaprika's error body, a flat `{"error": ...}` object."""
    return {"error": message}


def gecko_status_error(code: int, message: str) -> dict[str, Any]:
    """Build CoinGecko's structured error body used for auth and rate-limit errors."""
    return {"status": {"error_code": code, "error_message": message}}


def error_body(provider: str | None, status: int) -> Any:
    """Return the body a provider sends with a rate-limit or server error."""
    if provider == "coingecko":
        if status == 429:
            return gecko_status_error(429, "You've exceeded the Rate Limit. Please visit "
                                      "https://www.coingecko.com/en/api/pricing to subscribe "
                                      "to our API plans for higher rate limits.")
        return gecko_status_error(status, "Internal server error" if status == 500
                                  else "Service temporarily unavailable")
    if status == 429:
        return paprika_error("Too many requests")
    return paprika_error("Internal server error" if status == 500 else "Service unavailable")


def check_paprika_auth(key: str | None, headers: Mapping[str, str]) -> Response | None:
    """Reject a request unless it carries `Authorization: <key>` exactly, when a key is set."""
    if key is None:
        return None  # The free host never checks keys, even a wrong or "Bearer" one.
    sent = headers.get("Authorization")
    if sent is None:
        return 401, paprika_error("missing API key in the Authorization header")
    if sent != key:
        # A "Bearer <key>" value lands here too: the paid API wants the bare key.
        return 401, paprika_error("invalid API key")
    return None


def check_gecko_auth(key: str | None, plan: str, headers: Mapping[str, str],
                     query: Mapping[str, str]) -> Response | None:
    """Reject a request unless it carries the key under the configured plan's header or param."""
    if key is None:
        return None  # Keyless public access.
    other = "pro" if plan == "demo" else "demo"
    sent = headers.get(f"x-cg-{plan}-api-key") or query.get(f"x_cg_{plan}_api_key")
    wrong = headers.get(f"x-cg-{other}-api-key") or query.get(f"x_cg_{other}_api_key")
    if sent is None and wrong is not None:
        # CoinGecko's documented codes for a key sent to the other plan's root URL.
        if other == "pro":
            return 400, gecko_status_error(10010, "If you are using Pro API key, please change "
                                           "your root URL from api.coingecko.com to "
                                           "pro-api.coingecko.com")
        return 400, gecko_status_error(10011, "If you are using Demo API key, please change "
                                       "your root URL from pro-api.coingecko.com to "
                                       "api.coingecko.com")
    if sent is None:
        return 401, gecko_status_error(10002, f"API Key Missing: send x-cg-{plan}-api-key")
    if sent != key:
        return 401, gecko_status_error(10002, "Invalid API Key")
    return None


def paprika_route(endpoint: str, query: Mapping[str, str], series: SnapshotSeries) -> Response:
    """Answer a CoinPaprika endpoint from the current snapshot."""
    if endpoint == "/tickers":
        quotes = query.get("quotes", "USD")
        if quotes.upper() != "USD":
            return 400, paprika_error(f"invalid quotes: only USD is recorded, got {quotes!r}")
        return 200, series.current.records
    if endpoint == "/coins" and "coins" in series.extras:
        return 200, series.extras["coins"]
    return 404, paprika_error("not found")


def _int_param(query: Mapping[str, str], name: str, default: int) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        return None


def gecko_route(endpoint: str, query: Mapping[str, str], series: SnapshotSeries) -> Response:
    """Answer a CoinGecko endpoint from the current snapshot."""
    if endpoint == "/ping":
        return 200, {"gecko_says": "(V3) To the Moon!"}
    if endpoint.startswith("/coins/") and endpoint.endswith("/market_chart/range"):
        return chart_range(endpoint[len("/coins/"):-len("/market_chart/range")], query, series)
    if endpoint != "/coins/markets":
        return 404, {"error": "Incorrect path. Please check https://www.coingecko.com/api/"}
    vs = query.get("vs_currency")
    if not vs:
        return 400, {"error": "Missing parameter vs_currency"}
    if vs.lower() != "usd":
        return 400, {"error": "invalid vs_currency"}
    per_page = _int_param(query, "per_page", CG_DEFAULT_PER_PAGE)
    page = _int_param(query, "page", 1)
    if per_page is None or page is None:
        return 400, {"error": "invalid page or per_page"}
    # The real API caps per_page at 250 and treats page < 1 as the first page.
    per_page = max(1, min(per_page, CG_MAX_PER_PAGE))
    page = max(page, 1)
    records = sorted(series.current.records,
                     key=lambda r: (r.get("market_cap_rank") is None, r.get("market_cap_rank") or 0))
    if query.get("order", "market_cap_desc") == "market_cap_asc":
        records.reverse()
    start = (page - 1) * per_page
    return 200, records[start:start + per_page]


CHART_SERIES = ("prices", "market_caps", "total_volumes")


def chart_range(coin: str, query: Mapping[str, str], series: SnapshotSeries) -> Response:
    """Answer `/coins/{id}/market_chart/range`: the recorded [ms, value] points between `from` and `to` (seconds)."""
    if (query.get("vs_currency") or "").lower() != "usd":
        return 400, {"error": "invalid vs_currency"}
    try:
        start, end = float(query["from"]) * 1000, float(query["to"]) * 1000
    except (KeyError, ValueError):
        return 400, {"error": "from and to must be UNIX timestamps in seconds"}
    charts = series.extras.get("market_chart", {})
    if coin not in charts and all(record.get("id") != coin for record in series.current.records):
        return 404, {"error": "coin not found"}
    chart = charts.get(coin, {})
    return 200, {name: [point for point in chart.get(name, []) if start <= point[0] <= end] for name in CHART_SERIES}
