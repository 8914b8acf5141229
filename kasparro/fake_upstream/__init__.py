"""Offline fake of the CoinPaprika, CoinGecko, CoinCap, Binance, Kraken and CryptoCompare APIs for demos and tests only.

Never expose it, never run it in production. The last four live in `.venues`, one module each.

Stdlib only and independent of the rest of `kasparro`, so it can run anywhere.
"""
from __future__ import annotations

from .faults import FAULT_KINDS, PROVIDERS
from .server import FakeUpstream

__all__ = ["FAULT_KINDS", "PROVIDERS", "FakeUpstream"]
