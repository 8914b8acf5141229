"""The `stack` fixture: one private Kasparro system per test module."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.stack import Stack, make_root


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """Start private PostgreSQL and Redis, migrate the database, and tear everything down afterwards."""
    system = Stack(make_root())
    try:
        system.start()
        yield system
    finally:
        leftovers = system.close()
    assert not leftovers, f"still running after teardown: {leftovers}"
    assert not system.root.exists()
