"""The pipeline over CSV sources, through a real Celery worker and the migrated database."""
from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from kasparro.db import db
from kasparro.models import Checkpoint, MarketQuote, RawChunk, RawRecord, RejectedRecord
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
        raw = db.session.get(RawChunk, quote.raw_chunk_id)
        # The raw layer is the file's bytes: the quote's line, under the header it was read with.
        assert raw.header.decode() == HEADER and quote.raw_line == 2 and raw.first_line == 2
        assert raw.data.decode().splitlines()[quote.raw_line - raw.first_line] == \
            "bitcoin,2019-04-20,5296.23,13893183515,93510546402"
        assert quote.raw_record_id is None and quote.asset.slug == "bitcoin"


def test_running_again_over_unchanged_files_changes_nothing(app: Flask, sources_file: Path, tmp_path: Path) -> None:
    declare(sources_file, {"daily": csv_spec(write_csv(tmp_path / "daily.csv", ROWS))})
    run_now(app)

    again = run_now(app)

    (source_run,) = again.source_runs
    assert again.status == "success"
    assert (source_run.extracted, source_run.inserted, source_run.updated) == (0, 0, 0)
    assert quote_count(app) == 4


def test_appended_rows_are_the_only_ones_read_next_time(app: Flask, sources_file: Path, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "daily.csv", ROWS)
    declare(sources_file, {"daily": csv_spec(path)})
    run_now(app)
    with path.open("a") as handle:
        handle.write("bitcoin,2019-04-22,5387.44,15014212212,95164555301\n")

    run = run_now(app)

    (source_run,) = run.source_runs
    assert (source_run.extracted, source_run.inserted) == (1, 1)
    assert quote_count(app) == 5


def test_a_replaced_file_is_reread_without_duplicating_quotes(app: Flask, sources_file: Path, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "daily.csv", ROWS)
    declare(sources_file, {"daily": csv_spec(path)})
    run_now(app)
    write_csv(path, ["litecoin,2019-04-20,80.99,3151512600,4990009093"] + ROWS)

    run = run_now(app)

    (source_run,) = run.source_runs
    # A new first line makes a new raw chunk: the four old rows are read again and change nothing.
    assert (source_run.extracted, source_run.inserted, source_run.duplicates, source_run.skipped) == (5, 1, 0, 4)
    assert quote_count(app) == 5


def test_bad_rows_are_rejected_with_reasons_and_the_rest_loads(app: Flask, sources_file: Path, tmp_path: Path) -> None:
    bad = [
        "bitcoin,2019-04-23,,13893183515,93510546402",  # missing price
        "bitcoin,2019-04-24,n/a,13893183515,93510546402",  # not a number
        "ethereum,2019-04-23,-3.5,6159014000,18409744213",  # negative price
        "ethereum,2019-13-45,170.15,5936624734,17978186498",  # impossible date
        "ripple,2019-04-20,0.33",  # columns missing
    ]
    declare(sources_file, {"daily": csv_spec(write_csv(tmp_path / "daily.csv", ROWS + bad))})

    run = run_now(app)

    assert run.status == "partial"
    (source_run,) = run.source_runs
    assert (source_run.status, source_run.inserted, source_run.rejected) == ("partial", 4, 5)
    with app.app_context():
        reasons = {r.raw_record_id: r.reason for r in db.session.execute(select(RejectedRecord)).scalars()}
        positions = {db.session.get(RawRecord, rid).position: reason for rid, reason in reasons.items()}
    assert positions["daily.csv:6"] == {"price_usd": ["Field may not be null."]}
    assert positions["daily.csv:7"] == {"price_usd": ["Not a valid number."]}
    assert positions["daily.csv:8"] == {"price_usd": ["Must be greater than or equal to 0 and less than or "
                                                      "equal to 1000000000000."]}
    assert "does not match" in positions["daily.csv:9"]["_schema"][0]
    assert positions["daily.csv:10"] == {"_schema": ["missing field: market_cap, volume"]}


def test_a_source_that_cannot_be_read_fails_alone(app: Flask, sources_file: Path, tmp_path: Path) -> None:
    declare(sources_file, {
        "daily": csv_spec(write_csv(tmp_path / "daily.csv", ROWS)),
        "gone": csv_spec(tmp_path / "missing.csv"),
    })

    run = run_now(app)

    assert run.status == "partial"
    by_source = {s.source: s for s in run.source_runs}
    assert by_source["daily"].status == "success"
    assert by_source["gone"].status == "failed"
    assert "missing.csv not found" in by_source["gone"].error
    assert quote_count(app, "daily") == 4


def test_a_run_whose_every_source_fails_is_failed(app: Flask, sources_file: Path, tmp_path: Path) -> None:
    declare(sources_file, {"gone": csv_spec(tmp_path / "missing.csv")})

    run = run_now(app)

    assert run.status == "failed"


def test_the_checkpoint_records_how_far_the_file_was_loaded(app: Flask, sources_file: Path, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "daily.csv", ROWS)
    declare(sources_file, {"daily": csv_spec(path)})

    run = run_now(app)

    with app.app_context():
        checkpoint = db.session.get(Checkpoint, "daily")
        assert checkpoint.run_id == run.id
        assert checkpoint.cursor["offset"] == path.stat().st_size
        assert checkpoint.cursor["line"] == 5


def test_two_files_with_different_columns_unify_into_one_asset(app: Flask, sources_file: Path, tmp_path: Path) -> None:
    kaggle = tmp_path / "kaggle.csv"
    kaggle.write_text("SNo,Name,Symbol,Date,Close,Volume,Marketcap\n"
                      "1,Bitcoin,BTC,2021-07-05,33746.0,26721554282.0,632642000000.0\n")
    declare(sources_file, {
        "daily": csv_spec(write_csv(tmp_path / "daily.csv", ROWS)),
        "kaggle": csv_spec(kaggle, {"source_asset_id": "Name", "symbol": "Symbol", "name": "Name",
                                    "observed_at": "Date", "price_usd": "Close", "volume_24h_usd": "Volume",
                                    "market_cap_usd": "Marketcap"}),
    })

    run_now(app)

    with app.app_context():
        slugs = db.session.execute(select(MarketQuote.source, MarketQuote.asset_id)).all()
    bitcoin_assets = {asset for source, asset in slugs if source == "kaggle"}
    assert len(bitcoin_assets) == 1
    assert bitcoin_assets <= {asset for source, asset in slugs if source == "daily"}
