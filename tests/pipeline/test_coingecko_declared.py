"""CoinGecko's /coins/markets declared in sources.toml (kind = "http") gives the rows the `coingecko` kind gives.

Both shipped blocks run in one run through the real worker against the same recorded snapshot of the fake
upstream; the declared one is shipped `enabled = false`, as an alternative, and switched on here.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from kasparro.db import db
from kasparro.fake_upstream.server import FakeUpstream
from kasparro.models import Asset, MarketQuote, RawRecord
from tests.conftest import ROOT
from tests.pipeline.helpers import declare, run_now, shipped

pytestmark = pytest.mark.usefixtures("worker")


def shipped_block(name: str) -> dict[str, Any]:
    return tomllib.loads((ROOT / "sources.toml").read_text())["sources"][name]


def unified(app: Flask, source: str) -> set[tuple[Any, ...]]:
    """Return `source`'s quotes as (slug, observed_at, price, market cap, volume, 24 h change)."""
    with app.app_context():
        return set(db.session.execute(
            select(Asset.slug, MarketQuote.observed_at, MarketQuote.price_usd, MarketQuote.market_cap_usd,
                   MarketQuote.volume_24h_usd, MarketQuote.percent_change_24h)
            .join(Asset, Asset.id == MarketQuote.asset_id).where(MarketQuote.source == source)).tuples())


def raw(app: Flask, source: str) -> list[tuple[str, dict[str, Any]]]:
    """Return `source`'s raw payloads by content hash."""
    with app.app_context():
        return sorted(db.session.execute(select(RawRecord.content_hash, RawRecord.payload)
                                         .where(RawRecord.source == source)).tuples())


def test_the_declared_coingecko_loads_the_same_rows_and_raw_payloads_as_the_kind(
        app: Flask, sources_file: Path, upstream: FakeUpstream) -> None:
    # The kind's base URL offline is fixed by the kind; the declared block's by its offline_path.
    kind = {**shipped_block("coingecko"), "base_url": upstream.coingecko_url}
    declare(sources_file, {"coingecko": kind, "coingecko_declared": shipped("coingecko_declared", upstream,
                                                                            enabled=True)})

    run = run_now(app)

    by_source = {s.source: s for s in run.source_runs}
    assert run.status == "success"
    assert by_source["coingecko"].inserted == by_source["coingecko_declared"].inserted == 100
    assert unified(app, "coingecko_declared") == unified(app, "coingecko")
    assert raw(app, "coingecko_declared") == raw(app, "coingecko")

