"""Read USD markets from CoinGecko page by page, by market cap, yielding only coins updated since the last load.

Settings (sources.toml): `base_url` (default the public host), `plan` ("demo" or
"pro"; pro is inferred from the host pro-api.coingecko.com), `api_key_env` (name
of the secret holding the key, sent as `x-cg-demo-api-key` or `x-cg-pro-api-key`
by plan), `per_page` (at most 250), `max_pages`, `requests_per_minute`,
`max_wait_seconds`, `timeout_seconds`, `max_retries`, `backoff_seconds`,
`max_retry_after_seconds`, `request_deadline_seconds`, `max_response_bytes`
(see `kasparro.sources.http`; the key never follows a redirect to another host),
`max_depth` (how deeply a coin may nest, default 64: a deeper one is rejected, its
neighbours load).

Paging stops at a short or empty page, or after `max_pages`. Checkpoint: see
`kasparro.sources.watermark`. The cursor holds no page number, because ranks
shift between requests: a resumed extract starts again at page 1 and skips
every coin whose `last_updated` its cursor already holds.
"""
from __future__ import annotations

import json
import logging
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlsplit

from kasparro.errors import PayloadError, SourceConfigError
from kasparro.sources import SourceContext, register
from kasparro.sources.base import Expected, Page, Progress, RawItem, expect
from kasparro.sources.http import client_from_spec, display_url, number_setting, secret_setting
from kasparro.sources.watermark import Watermarks, as_objects, chunked
from kasparro.sources.window import Window

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.coingecko.com/api/v3"
HOSTS = {"demo": "api.coingecko.com", "pro": "pro-api.coingecko.com"}
MAX_PER_PAGE = 250
# The demo plan allows 30 calls a minute.
DEFAULT_REQUESTS_PER_MINUTE = 30
# The fields of a `/coins/markets` entry that `to_unified` reads (see kasparro.pipeline.drift).
EXPECTED_SCHEMA = {
    "id": expect("string"), "symbol": expect("string"), "name": expect("string"),
    "last_updated": expect("string"), "current_price": expect("number"),
    "market_cap": expect("number|null"), "total_volume": expect("number|null"),
    "price_change_percentage_24h": expect("number|null"),
}
# CoinGecko answers a key sent to the other plan's host with 400 and these codes.
WRONG_PLAN_CODES = (10010, 10011)


def plan_for(base_url: str, plan: str | None) -> str:
    """Return the key plan to use: the declared one, else the one the host implies."""
    host = urlsplit(base_url).hostname or ""
    implied = "pro" if host == HOSTS["pro"] else "demo"
    if plan is None:
        return implied
    if plan not in HOSTS:
        raise ValueError(f"plan must be 'demo' or 'pro', got {plan!r}")
    if host in HOSTS.values() and host != HOSTS[plan]:
        raise ValueError(f"a {plan} key must be sent to {HOSTS[plan]}, not {host}")
    return plan


def is_wrong_plan(status: int, body: str) -> bool:
    """Return whether an answer says the key belongs to the other plan's host."""
    if status != 400:
        return False
    try:
        error = json.loads(body).get("status", {})
    except (ValueError, AttributeError):
        return False
    return isinstance(error, dict) and error.get("error_code") in WRONG_PLAN_CODES


DAY_MS = 86_400_000
# How far from exactly 24 h earlier a point may be to give a 24 h change (daily captures drift by minutes to hours).
CHANGE_TOLERANCE_MS = 3 * 3_600_000


def _series(chart: Mapping[str, Any], name: str) -> dict[int, Any]:
    return {int(point[0]): point[1] for point in chart.get(name) or []
            if isinstance(point, list) and len(point) == 2 and isinstance(point[0], (int, float))}


def _change_24h(prices: Mapping[int, Any], times: list[int], ms: int) -> float | None:
    """Return the percent change from the point nearest 24 h before `ms`, if one is close enough."""
    target = ms - DAY_MS
    index = bisect_left(times, target)
    near = [t for t in times[max(index - 1, 0):index + 1] if abs(t - target) <= CHANGE_TOLERANCE_MS]
    before = prices.get(min(near, key=lambda t: abs(t - target))) if near else None
    price = prices[ms]
    if not isinstance(before, (int, float)) or not isinstance(price, (int, float)) or not before:
        return None
    return round((price / before - 1) * 100, 6)


def chart_points(coin: str, chart: Mapping[str, Any], listed: Mapping[str, Any], since_ms: int) -> list[dict[str, Any]]:
    """Turn a market chart's `[ms, value]` series into one markets-shaped record per price point from `since_ms`.

    Points before `since_ms` (the day the request adds before the window) only give the 24 h change.
    """
    prices, caps, volumes = _series(chart, "prices"), _series(chart, "market_caps"), _series(chart, "total_volumes")
    times = sorted(prices)
    return [{"id": coin, "symbol": listed.get("symbol"), "name": listed.get("name"),
             "last_updated": datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat().replace("+00:00", "Z"),
             "current_price": prices[ms], "market_cap": caps.get(ms), "total_volume": volumes.get(ms),
             "price_change_percentage_24h": _change_24h(prices, times, ms)}
            for ms in times if ms >= since_ms]


class CoinGeckoSource:
    """CoinGecko's `/coins/markets` listing in USD."""

    kind = "coingecko"

    def __init__(self, name: str, spec: Mapping[str, Any], context: SourceContext) -> None:
        self.name = name
        self.base_url = str(spec.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        try:
            self.plan = plan_for(self.base_url, spec.get("plan"))
        except ValueError as exc:
            raise SourceConfigError(str(exc), source=name) from None
        self.per_page = int(number_setting(name, spec, "per_page", MAX_PER_PAGE, 1, MAX_PER_PAGE))
        self.max_pages = int(number_setting(name, spec, "max_pages", 4, 1))
        key = secret_setting(name, spec, context)
        headers = {f"x-cg-{self.plan}-api-key": key} if key else None
        self.client = client_from_spec(name, spec, context, default_rpm=DEFAULT_REQUESTS_PER_MINUTE,
                                       auth_headers=headers, is_auth_error=is_wrong_plan)

    def pages(self, cursor: Mapping[str, Any] | None, page_size: int) -> Iterator[Page]:
        """Yield pages of coins updated after the cursor's watermarks, in market-cap order."""
        marks = Watermarks(cursor)
        pending: Page | None = None
        for number in range(1, self.max_pages + 1):
            coins = self._fetch(number)
            fresh = [RawItem(coin, f"markets?page={number}#{index}") for index, coin in enumerate(coins)
                     if marks.is_new(coin)]
            for chunk in chunked(fresh, page_size):
                # Hold one page back, so the last one can carry the final (pruned) cursor.
                if pending is not None:
                    yield pending
                marks.advance(chunk)
                # Pages fetched of at most max_pages: the listing may end sooner, on a short page.
                pending = Page(chunk, marks.cursor(), Progress(number, self.max_pages, "pages"))
            if len(coins) < self.per_page:
                break
        if pending is not None:
            # The listing ended: the pages fetched were all there was to read.
            yield Page(pending.items, marks.cursor(final=True), Progress(number, number, "pages"))

    def window_pages(self, window: Window, cursor: Mapping[str, Any] | None, page_size: int) -> Iterator[Page]:
        """Yield each listed coin's (or each of `window.coins`') points in the window, one coin after another.

        A point becomes a record of the `/coins/markets` shape (same mapping, same
        drift checks), with the symbol and name the listing gives. The cursor
        names the coins done, so a resumed backfill goes on with the next coin.
        """
        listed = self._listing()
        unknown = sorted(set(window.coins) - set(listed))
        if unknown:
            raise SourceConfigError(f"coins not in the listing ({self.max_pages} page(s) read): "
                                    f"{', '.join(unknown)}", source=self.name)
        done = list((cursor or {}).get("backfilled", []))
        for coin in [c for c in (window.coins or tuple(listed)) if c not in done]:
            items = [RawItem(point, f"market_chart/range?id={coin}#{index}")
                     for index, point in enumerate(self._chart(coin, window, listed[coin]))]
            chunks = list(chunked(items, page_size))
            for number, chunk in enumerate(chunks, 1):
                yield Page(chunk, {"backfilled": done + [coin] if number == len(chunks) else done})
            done.append(coin)

    def _listing(self) -> dict[str, dict[str, Any]]:
        listed: dict[str, dict[str, Any]] = {}
        for number in range(1, self.max_pages + 1):
            coins = self._fetch(number)
            listed.update((coin["id"], coin) for coin in coins if isinstance(coin.get("id"), str))
            if len(coins) < self.per_page:
                break
        return listed

    def _chart(self, coin: str, window: Window, listed: Mapping[str, Any]) -> list[dict[str, Any]]:
        url = f"{self.base_url}/coins/{quote(coin, safe='')}/market_chart/range"
        since = int(window.start.timestamp() * 1000)
        # A day more than the window, so its first points have a 24 h change too.
        params = {"vs_currency": "usd", "from": (since - DAY_MS - CHANGE_TOLERANCE_MS) // 1000,
                  "to": int(window.end.timestamp())}
        chart = self.client.get_json(url, params)
        if not isinstance(chart, dict) or not isinstance(chart.get("prices"), list):
            raise PayloadError(f"GET {display_url(url)} returned no `prices` array", source=self.name)
        return chart_points(coin, chart, listed, since)

    def _fetch(self, number: int) -> list[dict[str, Any]]:
        url = f"{self.base_url}/coins/markets"
        params = {"vs_currency": "usd", "order": "market_cap_desc", "per_page": self.per_page, "page": number}
        coins = self.client.get_json(url, params)
        if not isinstance(coins, list):
            raise PayloadError(f"GET {display_url(url)} page {number} returned a JSON {type(coins).__name__}, "
                               "expected an array", source=self.name)
        logger.info("coingecko page source=%s page=%d listed=%d", self.name, number, len(coins),
                    extra={"source": self.name, "page": number, "listed": len(coins)})
        return as_objects(coins, self.client.max_depth)

    def expected_schema(self) -> Mapping[str, Expected]:
        """Return the market entry fields this mapping reads."""
        return EXPECTED_SCHEMA

    def to_unified(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Map a market entry to unified fields."""
        return {
            "source_asset_id": payload["id"],
            "symbol": payload["symbol"],
            "name": payload["name"],
            "observed_at": payload["last_updated"],
            "price_usd": payload["current_price"],
            "market_cap_usd": payload["market_cap"],
            "volume_24h_usd": payload["total_volume"],
            "percent_change_24h": payload["price_change_percentage_24h"],
        }


register("coingecko")(CoinGeckoSource)
