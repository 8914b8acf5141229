"""News relinking under concurrent loads: two transactions on the same stale items, interleaved on purpose.

A source's load tasks run at once on the worker processes, and each relinks the
source's stale items at its end (`relink_stale`), while another may be writing
and relinking items of its batch (`load`). Here the first transaction is held
open after its work until the second has either passed it or is blocked on it
(seen in pg_stat_activity), then committed; the law is that neither fails and
every item ends with exactly the links the matcher finds in it now.
"""
from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from kasparro.db import db
from kasparro.fake_upstream.feeds import edit_item, split_items
from kasparro.fake_upstream.server import FakeUpstream
from kasparro.pipeline.news_match import Matcher, plain_text
from kasparro.pipeline.targets import news
from tests.conftest import ROOT
from tests.pipeline.helpers import declare
from tests.pipeline.inprocess import run_in_process, start

CAPTURE = ROOT / "data" / "upstream" / "rss" / "coindesk_rss_2023-03-13.xml"
EDITED_INDEX = 18  # "Bitcoin Rises on Report ...": linked to bitcoin before its edit and after
ITEMS = 50


def add_asset(engine: Engine, slug: str, symbol: str, name: str) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO assets (slug, symbol, name) VALUES (:s, :y, :n)"),
                     {"s": slug, "y": symbol, "n": name})


@pytest.fixture
def stale(app: Flask, sources_file: Path, upstream: FakeUpstream, tmp_path: Path) -> Iterator[Engine]:
    """The CoinDesk capture loaded and linked while only bitcoin existed; then ethereum appears: all 50 are stale."""
    # The feed is served from a copy, so a test can re-publish one of its items.
    shutil.copy(CAPTURE, tmp_path / "news.xml")
    upstream.feeds.dir = tmp_path
    declare(sources_file, {"coindesk": {"kind": "rss", "url": upstream.rss_url("news"), "feed": "coindesk",
                                        "requests_per_minute": 600, "backoff_seconds": 0.1, "max_retries": 1}})
    with app.app_context():
        engine = db.engine
    add_asset(engine, "bitcoin", "BTC", "Bitcoin")
    assert run_in_process(app, "coindesk").status == "success"
    add_asset(engine, "ethereum", "ETH", "Ethereum")
    with Session(engine) as session:
        assert session.execute(text("SELECT count(*) FROM news_items WHERE assets_known = 1")).scalar() == ITEMS
        assert session.execute(text("SELECT count(*) FROM news_asset_links")).scalar() > 0
    yield engine


def links_found_now(engine: Engine) -> list[tuple[int, int, str, str]]:
    """Return the links the matcher finds in every stored item with today's assets."""
    with Session(engine) as session:
        matcher = Matcher(news.known_assets(session))
        items = session.execute(text("SELECT id, title, summary FROM news_items")).all()
    return sorted((item.id, link.asset_id, link.matched_by, link.matched_text)
                  for item in items for link in matcher.links(plain_text(item.title, item.summary)))


def links_stored(engine: Engine) -> list[tuple[int, int, str, str]]:
    with Session(engine) as session:
        return sorted(tuple(row) for row in session.execute(
            text("SELECT news_item_id, asset_id, matched_by, matched_text FROM news_asset_links")).all())


class Second(threading.Thread):
    """Run `work` in its own session and commit; keep its backend pid, its result or its error."""

    def __init__(self, engine: Engine, work: Callable[[Session], Any]) -> None:
        super().__init__(daemon=True)
        self.engine, self.work = engine, work
        self.pid: int | None = None
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        with Session(self.engine) as session:
            self.pid = session.execute(text("SELECT pg_backend_pid()")).scalar()
            try:
                self.result = self.work(session)
                session.commit()
            except BaseException as exc:  # noqa: BLE001 - the test asserts on it
                self.error = exc


def wait_blocked_or_done(engine: Engine, second: Second, timeout: float = 30) -> None:
    """Wait until the second transaction waits on a lock the first holds, or has finished without waiting."""
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            if not second.is_alive():
                return
            if second.pid is not None and conn.execute(
                    text("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = :pid"),
                    {"pid": second.pid}).scalar():
                return
            time.sleep(0.02)
    raise AssertionError("the second transaction neither finished nor blocked")


def interleave(engine: Engine, first: Callable[[Session], Any],
               second_work: Callable[[Session], Any]) -> tuple[Any, Any]:
    """Do `first` and hold it open until `second_work` (on another connection) is blocked or done; return first's."""
    with Session(engine) as session:
        first_result = first(session)
        second = Second(engine, second_work)
        second.start()
        wait_blocked_or_done(engine, second)
        session.commit()
    second.join(30)
    assert not second.is_alive()
    assert second.error is None, f"the second transaction failed: {second.error!r}"
    return first_result, second.result


def relink(session: Session) -> int:
    return news.relink_stale(session, "coindesk")


def test_two_concurrent_relinks_link_every_stale_item_exactly_once(stale: Engine) -> None:
    first, second = interleave(stale, relink, relink)

    assert first + second == ITEMS  # each stale item relinked by one of the two, none by both
    assert links_stored(stale) == links_found_now(stale)
    with Session(stale) as session:
        assert session.execute(text("SELECT count(*) FROM news_items WHERE assets_known <> 2")).scalar() == 0


def test_a_relink_beside_a_load_writing_the_same_item_leaves_the_loads_links(
        app: Flask, stale: Engine, tmp_path: Path) -> None:
    head, items, tail = split_items(CAPTURE.read_bytes())
    items[EDITED_INDEX] = edit_item(items[EDITED_INDEX])
    (tmp_path / "news.xml").write_bytes(head + b"".join(items) + tail)
    with app.app_context():  # the next run reads the edit alone and stages it, linked with both assets known
        stages = start("coindesk")
        stages.extract()
        (batch,) = stages.batches()
        stages.transform(batch)
        batch_id = batch.id

    loaded, relinked = interleave(stale, lambda session: news.load(session, batch_id), relink)

    assert loaded[:2] == (0, 1)  # the edit updated its item
    assert relinked == ITEMS - 1  # every stale item but the one the load was writing
    assert links_stored(stale) == links_found_now(stale)
    with Session(stale) as session:
        edited = session.execute(text("SELECT id FROM news_items WHERE title LIKE '%(Updated)'")).scalar_one()
    assert any(link[0] == edited for link in links_stored(stale))  # the edit is linked, by the load
