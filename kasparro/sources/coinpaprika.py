"""Read USD tickers from CoinPaprika: every coin in one call, only coins updated since the last load.

Settings (sources.toml): `base_url` (default the free host; the paid host is
https://api-pro.coinpaprika.com/v1), `api_key_env` (name of the secret holding
the key, sent as `Authorization: <key>` with no "Bearer", as CoinPaprika
documents), `requests_per_minute`, `max_wait_seconds`, `timeout_seconds`,
`max_retries`, `backoff_seconds`, `max_retry_after_seconds`,
`request_deadline_seconds`, `max_response_bytes` (see `kasparro.sources.http`),
`max_depth` (how deeply a ticker may nest, default 64: a deeper one is rejected,
its neighbours load).

Checkpoint: see `kasparro.sources.watermark`. One request returns the whole
listing, so a resumed extract refetches it and skips every coin whose
`last_updated` its cursor already holds.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from kasparro.errors import PayloadError
from kasparro.sources import SourceContext, register
from kasparro.sources.base import Expected, Page, Progress, RawItem, expect
from kasparro.sources.http import client_from_spec, display_url, secret_setting
from kasparro.sources.watermark import Watermarks, as_objects, chunked

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.coinpaprika.com/v1"
PAID_HOST = "api-pro.coinpaprika.com"
# The free plan allows about 25k calls a month; one extract is one call.
DEFAULT_REQUESTS_PER_MINUTE = 10
# The ticker fields `to_unified` reads (see kasparro.pipeline.drift).
EXPECTED_SCHEMA = {
    "id": expect("string"), "symbol": expect("string"), "name": expect("string"),
    "last_updated": expect("string"), "quotes.USD.price": expect("number"),
    "quotes.USD.market_cap": expect("number|null"), "quotes.USD.volume_24h": expect("number|null"),
    "quotes.USD.percent_change_24h": expect("number|null"),
}


class CoinPaprikaSource:
    """CoinPaprika's `/tickers?quotes=USD` listing."""

    kind = "coinpaprika"

    def __init__(self, name: str, spec: Mapping[str, Any], context: SourceContext) -> None:
        self.name = name
        self.base_url = str(spec.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        key = secret_setting(name, spec, context)
        if key and urlsplit(self.base_url).hostname == "api.coinpaprika.com":
            logger.info("coinpaprika key configured for the free host, which does not check it source=%s",
                        name, extra={"source": name})
        self.client = client_from_spec(name, spec, context, default_rpm=DEFAULT_REQUESTS_PER_MINUTE,
                                       auth_headers={"Authorization": key} if key else None)

    def pages(self, cursor: Mapping[str, Any] | None, page_size: int) -> Iterator[Page]:
        """Yield pages of coins updated after the cursor's watermarks."""
        url = f"{self.base_url}/tickers"
        coins = self.client.get_json(url, {"quotes": "USD"})
        if not isinstance(coins, list):
            raise PayloadError(f"GET {display_url(url)} returned a JSON {type(coins).__name__}, expected an array",
                               source=self.name)
        marks = Watermarks(cursor)
        listed = as_objects(coins, self.client.max_depth)
        fresh = [RawItem(coin, f"tickers#{index}") for index, coin in enumerate(listed) if marks.is_new(coin)]
        logger.info("coinpaprika listing source=%s listed=%d new=%d", self.name, len(coins), len(fresh),
                    extra={"source": self.name, "listed": len(coins), "new": len(fresh)})
        chunks = list(chunked(fresh, page_size))
        done = 0
        for number, chunk in enumerate(chunks, 1):
            marks.advance(chunk)
            done += len(chunk)
            yield Page(chunk, marks.cursor(final=number == len(chunks)), Progress(done, len(fresh), "records"))

    def expected_schema(self) -> Mapping[str, Expected]:
        """Return the ticker fields this mapping reads."""
        return EXPECTED_SCHEMA

    def to_unified(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Map a ticker to unified fields; a ticker without a USD quote is refused."""
        quotes = payload["quotes"]
        usd = quotes.get("USD") if isinstance(quotes, Mapping) else None
        if not isinstance(usd, Mapping):
            held = ", ".join(sorted(quotes)) if isinstance(quotes, Mapping) and quotes else "none"
            raise ValueError(f"quotes.USD is missing (quotes held: {held})")
        return {
            "source_asset_id": payload["id"],
            "symbol": payload["symbol"],
            "name": payload["name"],
            "observed_at": payload["last_updated"],
            "price_usd": _quote(usd, "price"),
            "market_cap_usd": _quote(usd, "market_cap"),
            "volume_24h_usd": _quote(usd, "volume_24h"),
            "percent_change_24h": _quote(usd, "percent_change_24h"),
        }


def _quote(usd: Mapping[str, Any], field: str) -> Any:
    if field not in usd:
        raise KeyError(f"quotes.USD.{field}")
    return usd[field]


register("coinpaprika")(CoinPaprikaSource)
