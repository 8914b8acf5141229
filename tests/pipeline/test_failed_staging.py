"""A source run that fails drops what it staged and never loaded, whatever its target: quotes or news."""
from __future__ import annotations

import shutil
from pathlib import Path

from flask import Flask
from sqlalchemy import text

from kasparro.db import db
from kasparro.fake_upstream.server import FakeUpstream
from tests.conftest import ROOT
from tests.pipeline.helpers import declare
from tests.pipeline.inprocess import start

CAPTURE = ROOT / "data" / "upstream" / "rss" / "coindesk_rss_2023-03-13.xml"


def staged(table: str) -> int:
    return db.session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


def test_a_news_source_failing_between_transform_and_load_leaves_nothing_staged(
        app: Flask, sources_file: Path, upstream: FakeUpstream, tmp_path: Path) -> None:
    shutil.copy(CAPTURE, tmp_path / "news.xml")
    upstream.feeds.dir = tmp_path
    declare(sources_file, {"coindesk": {"kind": "rss", "url": upstream.rss_url("news"), "feed": "coindesk",
                                        "requests_per_minute": 600, "backoff_seconds": 0.1, "max_retries": 1}})
    with app.app_context():
        stages = start("coindesk")
        stages.extract()
        for batch in stages.batches():
            stages.transform(batch)
        assert staged("news_stage") == 50  # every item of the capture waits for its load

        stages.give_up("load", RuntimeError("worker lost"))

        assert stages.source_run().status == "failed"
        assert staged("news_stage") == 0
        assert db.session.execute(text("SELECT count(*) FROM news_items")).scalar_one() == 0
