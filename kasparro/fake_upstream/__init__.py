"""Offline fake of the CoinPaprika and CoinGecko APIs for demos and tests only: never expose it, never run it in production.

Stdlib only and independent of the rest of `kasparro`, so it can run anywhere.
"""
from __future__ import annotations

from .faults import FAULT_KINDS, PROVIDERS
from .server import FakeUpstream

__all__ = ["FAULT_KINDS", "PROVIDERS", "FakeUpstream"]
