"""Read USD markets from CoinGecko page by page, by market cap, yielding only coins updated since the last load.

Settings (sources.toml): `base_url` (default the public host), `plan` ("demo" or
"pro"; pro is inferred from the host pro-api.coingecko.com), `api_key_env` (name
of the secret holding the key, sent as `x-cg-demo-api-key` or `x-cg-pro-api-key`
by plan), `per_page` (at most 250), `max_pages`, `requests_per_minute`,
`max_wait_seconds`, `timeout_seconds`, `max_retries`, `backoff_seconds`,
`max_retry_after_seconds`.

Paging stops at a short or empty page, or after `max_pages`. Checkpoint: see
`kasparro.sources.watermark`. The cursor holds no page number, because ranks
shift between requests: a resumed extract starts again at page 1 and skips
every coin whose `last_updated` its cursor already holds.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from kasparro.errors import PayloadError, SourceConfigError
from kasparro.sources import SourceContext, register
from kasparro.sources.base import Expected, Page, Progress, RawItem, expect
from kasparro.sources.http import client_from_spec, display_url, number_setting, secret_setting
from kasparro.sources.watermark import Watermarks, as_objects, chunked

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

    def _fetch(self, number: int) -> list[dict[str, Any]]:
        url = f"{self.base_url}/coins/markets"
        params = {"vs_currency": "usd", "order": "market_cap_desc", "per_page": self.per_page, "page": number}
        coins = self.client.get_json(url, params)
        if not isinstance(coins, list):
            raise PayloadError(f"GET {display_url(url)} page {number} returned a JSON {type(coins).__name__}, "
                               "expected an array", source=self.name)
        logger.info("coingecko page source=%s page=%d listed=%d", self.name, number, len(coins),
                    extra={"source": self.name, "page": number, "listed": len(coins)})
        return as_objects(coins)

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
