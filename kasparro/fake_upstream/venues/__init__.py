"""More market APIs the fake upstream serves offline, one module each, dispatched by path prefix.

    /coincap/v2/assets                   CoinCap v2, offset/limit pages        (.coincap)
    /binance/api/v3/klines               Binance spot klines, startTime paging (.binance)
    /kraken/0/public/OHLC                Kraken OHLC, since-polling, 720 cap   (.kraken)
    /cryptocompare/data/v2/histoday      CryptoCompare, toTs paging backwards  (.cryptocompare)

Each module's docstring gives the real API's paging semantics the routes follow; data/README.md says
how the recorded values were re-shaped. Faults reach them through the same `/__admin/faults`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import Venue, drift
from .binance import Binance
from .coincap import CoinCap
from .cryptocompare import CryptoCompare
from .kraken import Kraken

VENUE_PREFIXES = {"coincap": "/coincap/v2", "binance": "/binance", "kraken": "/kraken",
                  "cryptocompare": "/cryptocompare"}
# Where a fault's drift acts in the bodies of the two original providers: a top-level array of objects.
_ARRAY_OF_OBJECTS = ()


def load_venues(data_dir: Path) -> dict[str, Venue]:
    """Load the recorded payloads of every venue that has a folder in `data_dir`; the others are not served."""
    kinds: tuple[type[Venue], ...] = (CoinCap, Binance, Kraken, CryptoCompare)
    return {kind.name: kind(data_dir) for kind in kinds if (data_dir / kind.name).is_dir()}


def drift_body(venue: Venue | None, kind: str, params: dict[str, Any], body: Any) -> Any:
    """Apply a drift fault where `venue` keeps its records (a top-level array when `venue` is None)."""
    if venue is None:
        # Only the array answers drift, as before; `/ping` and the market chart are objects.
        return drift(_ARRAY_OF_OBJECTS, kind, params, body) if isinstance(body, list) else body
    path = venue.ROWS if kind in ("drop_column", "add_column") else venue.OBJECTS
    return drift(path, kind, params, body)


__all__ = ["VENUE_PREFIXES", "Venue", "drift_body", "load_venues"]
