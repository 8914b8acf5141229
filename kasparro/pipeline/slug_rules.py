"""Say which canonical slug a source's own coin id implies, for the sources whose ids carry one.

Registered into `identity.SLUG_RULES` on import. Exceptions the rules get wrong
(CoinPaprika's `xrp-xrp` is CoinGecko's `ripple`) live in data/asset_overrides.csv,
which identity checks first.
"""
from __future__ import annotations

from kasparro.pipeline.identity import SLUG_RULES, CoinRef


def coingecko_slug(ref: CoinRef) -> str | None:
    """Return the CoinGecko id itself: CoinGecko ids are our canonical slugs."""
    return ref.source_asset_id or None


def coinpaprika_slug(ref: CoinRef) -> str | None:
    """Strip the `<symbol>-` prefix of a CoinPaprika id ("btc-bitcoin" -> "bitcoin"), else None."""
    prefix = f"{(ref.symbol or '').lower()}-"
    if prefix == "-" or not ref.source_asset_id.startswith(prefix):
        return None
    # A trailing dash ("xch-chia-") is CoinPaprika's own quirk, not part of the name.
    return ref.source_asset_id[len(prefix):].strip("-") or None


SLUG_RULES["coingecko"] = coingecko_slug
SLUG_RULES["coinpaprika"] = coinpaprika_slug
