"""Canonical assets: one per real coin, never merged on a shared ticker alone."""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from kasparro.db import db
from kasparro.models import Asset, AssetAlias
from kasparro.config import PROJECT_ROOT
from kasparro.pipeline.identity import CoinRef, Decision, load_overrides, preview, resolve

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



RENDER_PAPRIKA = {"rndr-render-token": CoinRef("rndr-render-token", "RNDR", "Render")}


def waiting_on(statement: str, thread: threading.Thread) -> bool:
    """Whether a session runs `statement` (its start) blocked on a lock, polled for up to 30 s while `thread` lives."""
    for _ in range(300):
        waiting = db.session.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                          " AND query LIKE :q"), {"q": statement + "%"}).scalar()
        db.session.rollback()
        if waiting or not thread.is_alive():
            return bool(waiting)
        time.sleep(0.1)
    return False


def test_one_id_lands_on_one_asset_in_every_source_of_its_id_space_when_another_space_commits_meanwhile() -> None:
    # CoinPaprika's id for Render keeps the old ticker (RNDR), CoinGecko's listing has the new one (RENDER), and
    # the ticker guard keeps them apart depending on what it sees. The interleaving a loaded worker pool made:
    # 1. CoinGecko's transform creates `render-token` and has not committed;
    # 2. a JSON drop with CoinPaprika ids decides `render-token` too (it cannot see it yet) and waits on the row;
    # 3. CoinGecko commits: the drop lands on RENDER's asset, and its transform goes on without committing;
    # 4. CoinPaprika decides now: it sees RENDER on `render-token`, not the drop's decision, and would split.
    # It must wait for the drop's decision and follow it: one CoinPaprika id, one asset.
    engine = db.engine
    gecko = Session(engine)
    resolve(gecko, "coingecko", "coingecko", {"render-token": CoinRef("render-token", "render", "Render")}, {})
    drop: dict[str, int] = {}
    paprika: dict[str, int] = {}
    drop_decided, drop_commits = threading.Event(), threading.Event()

    def json_drop() -> None:
        with Session(engine) as session:
            drop.update(resolve(session, "json_paprika_style", "coinpaprika", RENDER_PAPRIKA, {}))
            drop_decided.set()
            drop_commits.wait(30)
            session.commit()

    def coinpaprika() -> None:
        with Session(engine) as session:
            paprika.update(resolve(session, "coinpaprika", "coinpaprika", RENDER_PAPRIKA, {}))
            session.commit()

    first, second = threading.Thread(target=json_drop), threading.Thread(target=coinpaprika)
    first.start()
    try:
        assert waiting_on("INSERT INTO assets", first), "the drop did not wait on CoinGecko's uncommitted asset"
        gecko.commit()
        assert drop_decided.wait(30)
        second.start()
        waited = waiting_on("INSERT INTO id_space_slugs", second)
    finally:
        gecko.close()
        drop_commits.set()
        first.join(30)
        if second.is_alive() or second.ident:
            second.join(30)

    assert paprika == drop
    assert waited, "CoinPaprika did not wait for the drop's decision"
    assert method("coinpaprika", "rndr-render-token") == "id_space"


def test_the_check_of_a_source_shows_the_decision_its_id_space_already_made() -> None:
    drop = resolve(db.session, "json_paprika_style", "coinpaprika", RENDER_PAPRIKA, {})["rndr-render-token"]
    db.session.commit()
    db.session.execute(text("UPDATE assets SET symbol = 'RENDER' WHERE id = :id"), {"id": drop})  # a rebrand

    (decision,) = preview(db.session, "coinpaprika", "coinpaprika", RENDER_PAPRIKA, {}).values()

    assert decision == Decision(db.session.get(Asset, drop).slug, "id_space", True)
