"""Fixtures for pipeline tests: the fake upstream server in-process, checking keys as each provider does."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from kasparro.fake_upstream.server import FakeUpstream
from tests.conftest import PROVIDER_KEYS, ROOT


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    """A fake CoinPaprika and CoinGecko serving the recorded payloads in data/upstream."""
    server = FakeUpstream(ROOT / "data" / "upstream", coinpaprika_key=PROVIDER_KEYS["COINPAPRIKA_API_KEY"],
                          coingecko_key=PROVIDER_KEYS["COINGECKO_API_KEY"], coingecko_plan="demo")
    with server:
        server.start()
        yield server
