"""Fixtures for source tests: real Redis under a throwaway key prefix, and the in-process fake upstream."""
from __future__ import annotations

import copy
import json
import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from kasparro.fake_upstream import FakeUpstream
from kasparro.sources import SourceContext
from kasparro.sources.ratelimit import RedisBudgets

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = ROOT / "data" / "upstream"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
REDIS_URL = os.environ.get("TEST_REDIS_URL") or os.environ.get("TEST_BROKER_URL", "redis://127.0.0.1:6379/0")
# Budget windows are short so rate-limit tests run in seconds; the guarantee scales to a minute.
WINDOW_SECONDS = 1.0
# Generous enough that tests not about rate limits never wait.
FAST_RPM = 60_000
GECKO_CHANGED = ("bitcoin", "ethereum", "tether", "ripple", "solana", "dogecoin", "cardano")
PAPRIKA_CHANGED = ("btc-bitcoin", "eth-ethereum", "usdt-tether", "xrp-xrp", "bnb-binance-coin",
                   "usdc-usd-coin", "steth-lido-staked-ether", "ada-cardano", "doge-dogecoin", "sol-solana")


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """A client for the real Redis the budgets live in."""
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    yield client
    client.close()


@pytest.fixture
def key_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix no other test run uses; its keys are deleted afterwards."""
    prefix = f"kasparro-test:{uuid.uuid4().hex[:12]}"
    yield prefix
    for key in redis_client.scan_iter(f"{prefix}:*"):
        redis_client.delete(key)


@pytest.fixture
def budgets(redis_client: redis.Redis, key_prefix: str) -> RedisBudgets:
    """Shared budgets with a one-second window."""
    return RedisBudgets(redis_client, key_prefix, window_seconds=WINDOW_SECONDS, max_wait_seconds=10)


@pytest.fixture
def make_context(budgets: RedisBudgets) -> Callable[..., SourceContext]:
    """Build a source context on the shared budgets, with the given secrets."""

    def build(secrets: dict[str, str] | None = None) -> SourceContext:
        return SourceContext(secrets=secrets or {}, base_dir=ROOT, budget=budgets)

    return build


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    """The fake upstream without authentication, like the free hosts."""
    with FakeUpstream(DATA_DIR) as fake:
        yield fake


@pytest.fixture
def api_key() -> str:
    """A fresh key, so a leak in text or logs is unmistakable."""
    return f"sk-test-{secrets.token_hex(12)}"


@pytest.fixture
def keyed_upstream(api_key: str) -> Iterator[FakeUpstream]:
    """The fake upstream as the paid hosts: CoinPaprika and CoinGecko (demo plan) demand `api_key`."""
    with FakeUpstream(DATA_DIR, coinpaprika_key=api_key, coingecko_key=api_key, coingecko_plan="demo") as fake:
        yield fake


def _bump(records: list[dict[str, Any]], ids: tuple[str, ...], stamp: str, price: Callable[[dict], None]) -> None:
    for record in records:
        if record["id"] in ids:
            record["last_updated"] = stamp
            price(record)


@pytest.fixture
def changed_data_dir(tmp_path: Path) -> Path:
    """Payloads where the second snapshot of each provider updates only a few coins."""
    gecko = json.loads(next(iter(sorted((DATA_DIR / "coingecko" / "markets").glob("*.json")))).read_text())
    paprika = json.loads((DATA_DIR / "coinpaprika" / "tickers" / "2023-08-11.json").read_text())
    gecko_next, paprika_next = copy.deepcopy(gecko), copy.deepcopy(paprika)
    _bump(gecko_next, GECKO_CHANGED, "2026-04-17T03:00:00.000Z",
          lambda r: r.update(current_price=r["current_price"] * 1.01))
    _bump(paprika_next, PAPRIKA_CHANGED, "2023-08-11T09:00:00Z",
          lambda r: r["quotes"]["USD"].update(price=r["quotes"]["USD"]["price"] * 1.01))
    for provider, folder, snapshots in (("coingecko", "markets", (gecko, gecko_next)),
                                        ("coinpaprika", "tickers", (paprika, paprika_next))):
        target = tmp_path / provider / folder
        target.mkdir(parents=True)
        for name, records in zip(("2023-01-01", "2023-01-02"), snapshots):
            (target / f"{name}.json").write_text(json.dumps(records))
    return tmp_path


def upstream_log(fake: FakeUpstream, provider: str) -> list[dict[str, Any]]:
    """Return the fake upstream's log of requests to `provider`."""
    return [entry for entry in fake.requests if entry["provider"] == provider]
