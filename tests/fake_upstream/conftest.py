"""Fixtures the venue tests share: one fake upstream per module, rewound before each test."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kasparro.fake_upstream import FakeUpstream

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "upstream"


@pytest.fixture(scope="module")
def venue_server() -> Iterator[FakeUpstream]:
    with FakeUpstream(DATA_DIR) as fake:
        yield fake


@pytest.fixture
def venues(venue_server: FakeUpstream) -> FakeUpstream:
    """Return the module's server with its clocks rewound and its faults and request log cleared."""
    venue_server.reset()
    return venue_server
