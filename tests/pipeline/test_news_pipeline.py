"""RSS news through the whole pipeline: a real worker against the fake upstream's recorded feeds.

`upstream` is the fake upstream of tests/pipeline/conftest.py; it serves the feeds under /rss/.
"""
from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from kasparro.db import db
from kasparro.fake_upstream.server import FakeUpstream
from kasparro.models import Asset, Checkpoint, DriftEvent, NewsAssetLink, NewsItem, RawRecord, Run
from kasparro.tasks import enqueue_reprocess
from tests.conftest import PROVIDER_KEYS, ROOT, wait_for_run
from tests.pipeline.helpers import declare, run_now
from tests.pipeline.test_news_match import FALSE_MATCHES

pytestmark = pytest.mark.usefixtures("worker")


def feed(upstream: FakeUpstream, name: str, label: str = "coindesk", **settings: object) -> dict[str, object]:
    return {"kind": "rss", "url": upstream.rss_url(name), "feed": label, "requests_per_minute": 600,
            "backoff_seconds": 0.1, "max_retries": 1, **settings}


def paprika(upstream: FakeUpstream) -> dict[str, object]:
    return {"kind": "coinpaprika", "base_url": upstream.coinpaprika_url, "api_key_env": "COINPAPRIKA_API_KEY",
            "requests_per_minute": 600, "backoff_seconds": 0.1}


def news_counts(app: Flask) -> tuple[int, int]:
    with app.app_context():
        items = db.session.execute(select(func.count()).select_from(NewsItem)).scalar_one()
        guids = db.session.execute(select(func.count(func.distinct(NewsItem.guid)))).scalar_one()
        return items, guids


def links_of(app: Flask, title_like: str) -> dict[str, str]:
    with app.app_context():
        return dict(db.session.execute(
            select(Asset.slug, NewsAssetLink.matched_by).join(NewsAssetLink, NewsAssetLink.asset_id == Asset.id)
            .join(NewsItem, NewsItem.id == NewsAssetLink.news_item_id).where(NewsItem.title.like(title_like))
        ).all())


def test_the_coindesk_capture_loads_its_items_linked_to_the_quotes_assets(
        app: Flask, client: FlaskClient, sources_file: Path, upstream: FakeUpstream) -> None:
    declare(sources_file, {"coinpaprika": paprika(upstream), "coindesk": feed(upstream, "coindesk_rss_2023-03-13"),
                           "wire": feed(upstream, "sample_atom_2023-03-13", "wire")})
    run_now(app, ["coinpaprika"])

    run = run_now(app, ["coindesk", "wire"])

    assert run.status == "success"
    counts = {s.source: (s.extracted, s.inserted, s.rejected) for s in run.source_runs}
    assert counts == {"coindesk": (50, 50, 0), "wire": (6, 6, 0)}
    with app.app_context():
        item = db.session.execute(select(NewsItem).where(NewsItem.guid == "GAHBBCJVKFCXDLONTKPLD5TODI")).scalar_one()
        assert db.session.get(RawRecord, item.raw_record_id).payload["guid"] == item.guid  # lineage
        assert db.session.get(Checkpoint, "coindesk").cursor["newest"] == "2023-03-13T10:13:51.231000+00:00"
        # Both feeds have the shape the rss kind expects (RSS 2.0 and Atom alike): no drift.
        assert db.session.execute(select(func.count()).select_from(DriftEvent)).scalar_one() == 0
    assert links_of(app, "Bitcoin, U.S. Stock Futures%") == {"bitcoin": "name"}
    assert links_of(app, "Binance Will Convert%") == {"bitcoin": "name", "binance-usd": "ticker",
                                                      "binancecoin": "ticker"}
    # /news?asset=bitcoin: items linked to the very asset bitcoin's quotes belong to.
    news = client.get("/news?asset=bitcoin&limit=1000").get_json()["data"]
    quotes = client.get("/data?asset=bitcoin").get_json()["data"]
    assert len(news) == 13 and quotes and {q["asset"] for q in quotes} == {"bitcoin"}
    assert all("bitcoin" in {link["asset"] for link in row["assets"]} for row in news)
    assert client.get("/assets/bitcoin").get_json()["data"]["news"][0]["title"].startswith("Bitcoin Tops $24K")


def links_by_title(app: Flask) -> dict[str, set[str]]:
    """Return every item's title with the slugs it links (none for an item without links)."""
    found: dict[str, set[str]] = {}
    with app.app_context():
        for title, slug in db.session.execute(
                select(NewsItem.title, Asset.slug).outerjoin(NewsAssetLink, NewsAssetLink.news_item_id == NewsItem.id)
                .outerjoin(Asset, Asset.id == NewsAssetLink.asset_id)):
            found.setdefault(title, set()).update([slug] if slug else [])
    return found


def listed_slugs(app: Flask) -> set[str]:
    with app.app_context():
        return set(db.session.execute(select(Asset.slug)).scalars())


def test_the_captures_false_matches_are_not_linked(app: Flask, sources_file: Path, upstream: FakeUpstream) -> None:
    declare(sources_file, {"coinpaprika": paprika(upstream), "wire": feed(upstream, "sample_atom_2023-03-13", "wire"),
                           "coindesk": feed(upstream, "coindesk_rss_2023-03-13")})
    run_now(app, ["coinpaprika"])
    run_now(app, ["wire", "coindesk"])

    fee_market = links_of(app, "Solana Developers Ship%")
    gas_fees = links_of(app, "One Link Between Bank Runs%")
    staking = links_of(app, "Oracle Network Chainlink%")

    # Only coins the listing has can be linked at all: absent ones (Gas, BarnBridge) would prove nothing.
    assert {"solana", "chainlink", "harmony", "just", "ethereum", "usd-coin"} <= listed_slugs(app)
    assert fee_market == {"solana": "name"}  # the "solution"/"SOLUTION" in its summary add nothing
    assert not {"chainlink", "harmony"} & set(gas_fees)  # "One", "Link" as words
    assert {"ethereum", "usd-coin"} <= set(gas_fees)
    assert staking["chainlink"] == "name"
    with app.app_context():
        linked = set(db.session.execute(select(Asset.slug).join(NewsAssetLink, NewsAssetLink.asset_id == Asset.id)))
    assert ("just",) not in linked  # "just as regulators moved in" (the CoinDesk capture)


# FALSE_MATCHES names coins by test_news_match's ids; the listing's slugs where they differ.
SLUGS = {"usdc": "usd-coin", "bond": "barnbridge", "amp": "amp-token"}
# One text per coin the table guards against that must link it: a coin the pipeline could not link
# anyway would make its false match pass for nothing. (Gas and BarnBridge are not in the listing.)
CONTROLS = {"solana": "$SOL rallies", "chainlink": "$LINK rallies", "harmony": "$ONE rallies",
            "optimism": "$OP rallies", "bitcoin": "$BTC rallies", "ethereum": "$ETH rallies", "just": "$JST rallies",
            "amp-token": "$AMP rallies"}


def false_match_feed(data_dir: Path) -> Path:
    """Write an RSS feed with one item per text of the false-match table, and the texts that must link."""
    (data_dir / "rss").mkdir(parents=True)
    for provider in ("coinpaprika", "coingecko"):  # the fake upstream loads these whatever it serves
        (data_dir / provider).symlink_to(ROOT / "data" / "upstream" / provider)
    items = "".join(
        f"<item><title>{escape(text)}</title><guid isPermaLink=\"false\">false-match-{n}</guid>"
        f"<link>https://news.example.org/{n}</link><pubDate>Mon, 13 Mar 2023 10:{n:02d}:00 +0000</pubDate>"
        f"<description>{escape(text)}</description></item>"
        for n, text in enumerate([text for text, _ in FALSE_MATCHES] + list(CONTROLS.values())))
    (data_dir / "rss" / "false_matches.xml").write_text(
        f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><rss version=\"2.0\"><channel><title>False matches</title>"
        f"<link>https://news.example.org</link><description>t</description>{items}</channel></rss>")
    return data_dir


def test_no_text_of_the_false_match_table_links_its_coins_through_the_pipeline(
        app: Flask, sources_file: Path, upstream: FakeUpstream, tmp_path: Path) -> None:
    with FakeUpstream(false_match_feed(tmp_path / "upstream"), coinpaprika_key=PROVIDER_KEYS["COINPAPRIKA_API_KEY"],
                      coingecko_key=PROVIDER_KEYS["COINGECKO_API_KEY"], coingecko_plan="demo") as table:
        table.start()
        declare(sources_file, {"coinpaprika": paprika(upstream), "table": feed(table, "false_matches", "table")})
        run_now(app, ["coinpaprika"])
        run = run_now(app, ["table"])

    assert run.status == "success" and run.source_runs[0].inserted == len(FALSE_MATCHES) + len(CONTROLS)
    links = links_by_title(app)
    assert set(links) == {text for text, _ in FALSE_MATCHES} | set(CONTROLS.values())  # each text is an item
    assert {slug: links[text] for slug, text in CONTROLS.items()} == {slug: {slug} for slug in CONTROLS}
    checked = 0
    for text, forbidden in FALSE_MATCHES:
        candidates = {SLUGS.get(name, name) for name in forbidden} & set(CONTROLS)
        assert not candidates & links[text], text
        checked += len(candidates)
    assert checked == 13  # every coin of the table but Gas and BarnBridge, as often as the table names it


def test_an_advancing_feed_adds_only_new_items_and_an_edit_updates_without_duplicating(
        app: Flask, sources_file: Path, upstream: FakeUpstream) -> None:
    declare(sources_file, {"coindesk": feed(upstream, "coindesk-live")})
    first = run_now(app)
    upstream.advance("rss")
    second = run_now(app)
    upstream.advance("rss")
    third = run_now(app)
    unchanged = run_now(app)

    counts = [(r.source_runs[0].extracted, r.source_runs[0].inserted, r.source_runs[0].updated)
              for r in (first, second, third, unchanged)]
    assert counts == [(40, 40, 0), (5, 5, 0), (6, 5, 1), (0, 0, 0)]
    assert news_counts(app) == (50, 50)
    with app.app_context():
        edited = db.session.execute(select(NewsItem).where(NewsItem.title.like("%(Updated)"))).scalar_one()
        assert edited.changed_at is not None and edited.run_id == third.id


def test_reloading_stored_items_unchanged_updates_no_row(app: Flask, sources_file: Path,
                                                          upstream: FakeUpstream) -> None:
    declare(sources_file, {"coindesk": feed(upstream, "coindesk_rss_2023-03-13")})
    run_now(app)
    with app.app_context():
        start = enqueue_reprocess("coindesk")
        run_id = start.run.id

    again = wait_for_run(app, run_id)

    (source_run,) = again.source_runs
    assert (source_run.inserted, source_run.updated, source_run.skipped) == (0, 0, 50)
    assert news_counts(app) == (50, 50)


def test_a_malformed_feed_fails_only_its_own_source(app: Flask, sources_file: Path, upstream: FakeUpstream) -> None:
    declare(sources_file, {"broken": feed(upstream, "broken_rss"),
                           "coindesk": feed(upstream, "coindesk_rss_2023-03-13")})

    run = run_now(app)

    statuses = {s.source: (s.status, s.error or "") for s in run.source_runs}
    assert run.status == "partial"
    assert statuses["coindesk"] == ("success", "")
    assert statuses["broken"][0] == "failed" and "not well-formed XML" in statuses["broken"][1]
    assert news_counts(app) == (50, 50)


def test_a_second_feed_is_a_config_only_change(app: Flask, client: FlaskClient, sources_file: Path,
                                               upstream: FakeUpstream, tmp_path: Path) -> None:
    # Nothing but a sources file: two [sources.*] tables of kind "rss", no code.
    declared = tmp_path / "sources.toml"
    declared.write_text(f"""
[sources.coindesk_news]
kind = "rss"
url = "{upstream.rss_url('coindesk_rss_2023-03-13')}"
feed = "coindesk"
requests_per_minute = 600

[sources.wire_news]
kind = "rss"
url = "{upstream.rss_url('sample_atom_2023-03-13')}"
feed = "wire"
requests_per_minute = 600
""")
    sources_file.write_text(declared.read_text())

    run = run_now(app)

    assert run.status == "success" and {s.source: s.inserted for s in run.source_runs} == {
        "coindesk_news": 50, "wire_news": 6}
    wire = client.get("/news?feed=wire").get_json()["data"]
    coindesk = client.get("/news?feed=coindesk&limit=1000").get_json()["data"]
    assert len(wire) == 6 and {row["source"] for row in wire} == {"wire_news"}
    assert len(coindesk) == 50 and {row["feed"] for row in coindesk} == {"coindesk"}
    with app.app_context():
        assert db.session.execute(select(func.count()).select_from(Run)).scalar_one() == 1


def test_items_loaded_before_their_coins_existed_are_linked_by_the_next_run(
        app: Flask, client: FlaskClient, sources_file: Path, upstream: FakeUpstream) -> None:
    declare(sources_file, {"coinpaprika": paprika(upstream), "coindesk": feed(upstream, "coindesk_rss_2023-03-13")})
    run_now(app, ["coindesk"])  # no asset exists yet: nothing to link to
    assert client.get("/news?asset=bitcoin").get_json()["data"] == []
    run_now(app, ["coinpaprika"])

    again = run_now(app, ["coindesk"])

    assert again.source_runs[0].extracted == 0  # nothing re-read: the stored items are relinked
    news = client.get("/news?asset=bitcoin&limit=1000").get_json()["data"]
    assert len(news) == 11 and links_of(app, "Bitcoin, U.S. Stock Futures%") == {"bitcoin": "name"}
    with app.app_context():
        assets = db.session.execute(select(func.count()).select_from(Asset)).scalar_one()
        known = db.session.execute(select(func.min(NewsItem.assets_known))).scalar_one()
    assert known == assets
