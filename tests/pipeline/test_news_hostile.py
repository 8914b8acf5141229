"""A feed with a poisoned item, through a real worker and PostgreSQL: its neighbours load, it is rejected once.

The feed is served by a small local server, so the test can change it between runs.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from kasparro.db import db
from kasparro.models import NewsItem, RawRecord, RejectedRecord
from tests.pipeline.helpers import declare, run_now

pytestmark = pytest.mark.usefixtures("worker")


class Feed:
    """One RSS feed served at `url`, whose items the test sets."""

    def __init__(self) -> None:
        self.items: list[str] = []
        feed = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the standard library's name
                body = feed.body()
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/rss"

    def body(self) -> bytes:
        return ('<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Wire</title>'
                f"<link>https://news.example/</link>{''.join(self.items)}</channel></rss>").encode()


@pytest.fixture
def served() -> Iterator[Feed]:
    feed = Feed()
    thread = threading.Thread(target=feed.server.serve_forever, daemon=True)
    thread.start()
    yield feed
    feed.server.shutdown()
    feed.server.server_close()


def item(number: int, title: str) -> str:
    return (f"<item><title>{title}</title><link>https://news.example/{number}</link><guid>g{number}</guid>"
            f"<pubDate>Mon, 13 Mar 2023 10:{number:02d}:00 +0000</pubDate><description>s</description></item>")


def test_a_poisoned_item_is_rejected_at_its_position_its_neighbours_load_and_the_next_run_succeeds(
        app: Flask, sources_file: Path, served: Feed) -> None:
    served.items = [item(3, "Bitcoin rises"), item(2, "Bad &#xD83D; title"), item(1, "Ether falls")]
    declare(sources_file, {"wire": {"kind": "rss", "url": served.url, "requests_per_minute": 600,
                                    "backoff_seconds": 0.1, "max_retries": 1}})

    first = run_now(app)
    served.items.insert(0, item(4, "Solana ships"))
    second = run_now(app)

    parts = [run.source_runs[0] for run in (first, second)]
    counts = [(part.status, part.error, part.extracted, part.inserted, part.rejected) for part in parts]
    # Partial: loaded, with a reject. Then the next run is not failed, nor rejects the same item again.
    assert counts == [("partial", None, 3, 2, 1), ("success", None, 1, 1, 0)]
    with app.app_context():
        titles = db.session.execute(select(NewsItem.title).order_by(NewsItem.guid)).scalars().all()
        rejects = db.session.execute(select(RawRecord.position, RejectedRecord.reason, RawRecord.payload)
                                     .join(RawRecord, RawRecord.id == RejectedRecord.raw_record_id)).all()
    assert titles == ["Ether falls", "Bitcoin rises", "Solana ships"]
    [(position, reason, payload)] = rejects
    assert position == "entry#1" and payload["title"] == "Bad \ufffd title"
    assert "entry#1: title held a character XML or the database forbids (a lone surrogate" in str(reason)
