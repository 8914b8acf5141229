"""The pipeline over CSV sources, through a real Celery worker and the migrated database."""
from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from kasparro.db import db
from kasparro.models import Checkpoint, MarketQuote, RawRecord, RejectedRecord
from tests.pipeline.helpers import HEADER, csv_spec, declare, quote_count, run_now

pytestmark = pytest.mark.usefixtures("worker")

ROWS = [
    "bitcoin,2019-04-20,5296.23,13893183515,93510546402",
    "bitcoin,2019-04-21,5268.29,14174552212,93032041612",
    "ethereum,2019-04-20,174.26,6159014000,18409744213",
    "ethereum,2019-04-21,170.15,5936624734,17978186498",
]


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


def test_a_run_loads_every_valid_row_and_keeps_raw_lineage(app: Flask, sources_file: Path, tmp_path: Path) -> None:
    declare(sources_file, {"daily": csv_spec(write_csv(tmp_path / "daily.csv", ROWS))})

    run = run_now(app)

    assert run.status == "success"
    (source_run,) = run.source_runs
    assert (source_run.extracted, source_run.inserted, source_run.rejected) == (4, 4, 0)
    with app.app_context():
        quote = db.session.execute(select(MarketQuote).where(MarketQuote.price_usd == 5296.23)).scalar_one()
        raw = db.session.get(RawRecord, quote.raw_record_id)
        assert raw.payload == {"currency": "bitcoin", "date": "2019-04-20", "close": "5296.23",
                               "volume": "13893183515", "market_cap": "93510546402"}
        assert quote.asset.slug == "bitcoin"
