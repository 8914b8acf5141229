"""Canonical assets: one per real coin, never merged on a shared ticker alone."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from kasparro.db import db
from kasparro.models import Asset, AssetAlias
from kasparro.config import PROJECT_ROOT
from kasparro.pipeline.identity import CoinRef, load_overrides, resolve

pytestmark = pytest.mark.usefixtures("app_ctx")

OVERRIDES = {("coinpaprika", "xrp-xrp"): "ripple"}
OVERRIDES_FILE = PROJECT_ROOT / "data" / "asset_overrides.csv"


def resolve_one(source: str, kind: str, source_id: str, symbol: str | None, name: str | None) -> Asset:
    asset_id = resolve(db.session, source, kind, {source_id: CoinRef(source_id, symbol, name)}, OVERRIDES)[source_id]
    db.session.commit()
    return db.session.get(Asset, asset_id)


def method(source: str, source_id: str) -> str:
    return db.session.execute(select(AssetAlias.match_method).where(
        AssetAlias.source == source, AssetAlias.source_asset_id == source_id)).scalar_one()


def test_provider_ids_that_name_the_same_coin_resolve_to_one_asset() -> None:
    gecko = resolve_one("coingecko", "coingecko", "bitcoin", "btc", "Bitcoin")
    paprika = resolve_one("coinpaprika", "coinpaprika", "btc-bitcoin", "BTC", "Bitcoin")

    assert gecko.id == paprika.id
    assert (gecko.slug, gecko.symbol) == ("bitcoin", "BTC")
    assert method("coinpaprika", "btc-bitcoin") == "source_id"


def test_an_override_maps_ids_no_rule_can_guess() -> None:
    ripple = resolve_one("coingecko", "coingecko", "ripple", "xrp", "XRP")

    assert resolve_one("coinpaprika", "coinpaprika", "xrp-xrp", "XRP", "XRP").id == ripple.id
    assert method("coinpaprika", "xrp-xrp") == "override"


def test_coins_sharing_a_ticker_stay_apart() -> None:
    # Two unrelated real coins use the ticker UNI (Uniswap and Universe).
    uniswap = resolve_one("coingecko", "coingecko", "uniswap", "uni", "Uniswap")
    other = resolve_one("vendor", "csv", "universe", "UNI", "Universe")

    assert uniswap.id != other.id


def test_a_slug_already_held_by_a_coin_with_another_ticker_is_not_merged() -> None:
    resolve_one("coingecko", "coingecko", "velo", "velo", "Velo")

    imposter = resolve_one("coinpaprika", "coinpaprika", "vel-velo", "VEL", "Velo")

    assert imposter.slug == "velo-vel"


def test_a_csv_name_matches_a_known_asset_with_the_same_name_and_symbol() -> None:
    ethereum = resolve_one("coingecko", "coingecko", "ethereum", "eth", "Ethereum")

    assert resolve_one("kaggle", "csv", "Ethereum", "ETH", "Ethereum").id == ethereum.id
    assert method("kaggle", "Ethereum") == "name"


def test_an_alias_once_decided_is_kept() -> None:
    first = resolve_one("vendor", "csv", "BTC", "BTC", "Bitcoin")
    resolve_one("coingecko", "coingecko", "bitcoin", "btc", "Bitcoin")

    assert resolve_one("vendor", "csv", "BTC", "BTC", "Bitcoin").id == first.id


@pytest.mark.parametrize("paprika_first", [True, False])
def test_the_shipped_overrides_make_toncoin_one_asset_whichever_source_comes_first(paprika_first: bool) -> None:
    # CoinPaprika's ticker is TONCOIN, CoinGecko's TON: without the override the ticker guard splits them.
    shipped = load_overrides(str(OVERRIDES_FILE))
    refs = [("coinpaprika", "toncoin-the-open-network", "TONCOIN", "Toncoin"),
            ("coingecko", "the-open-network", "ton", "Toncoin")]
    found = [resolve(db.session, kind, kind, {sid: CoinRef(sid, symbol, name)}, shipped)[sid]
             for kind, sid, symbol, name in (refs if paprika_first else refs[::-1])]

    assert found[0] == found[1]
    assert db.session.get(Asset, found[0]).slug == "the-open-network"
