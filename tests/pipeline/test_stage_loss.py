"""quote_stage is UNLOGGED: if it loses a batch's staged rows (a PostgreSQL crash), load re-stages, never skips."""
from __future__ import annotations

from pathlib import Path

from flask import Flask
from sqlalchemy import func, select, text

from kasparro import tasks
from kasparro.db import db
from kasparro.models import Checkpoint, MarketQuote, RawBatch, SchemaSnapshot, SourceRun
from tests.pipeline.helpers import HEADER, csv_spec, declare
from tests.pipeline.inprocess import Stages, start

ROWS = ["bitcoin,2019-04-20,5296.23,13893183515,93510546402", "ethereum,2019-04-20,174.26,6159014000,18409744213",
        "ripple,2019-02-30,0.33,1000,2000", "bitcoin,2019-04-21,5268.29,1,2", "ethereum,2019-04-21,170.1,1,2"]


def transformed_then_emptied(app: Flask, sources_file: Path, tmp_path: Path) -> Stages:
    """Extract and transform every batch of a 5-row file (one row invalid), then empty quote_stage as a crash does."""
    path = tmp_path / "daily.csv"
    path.write_text(HEADER + "\n".join(ROWS) + "\n")
    declare(sources_file, {"daily": csv_spec(path)})
    stages = start("daily")
    stages.extract(batch_size=2)
    for batch in stages.batches():
        stages.transform(batch)
    # PostgreSQL's typed rows of the first and third chunks load at once; the second holds 30 February, whose
    # cast raises in PostgreSQL, so that chunk is read the careful way and staged for load.
    assert [(b.state, b.staged) for b in stages.batches()] == [("loaded", None), ("transformed", 1),
                                                               ("loaded", None)]
    db.session.execute(text("TRUNCATE quote_stage"))
    db.session.commit()
    return stages


def count(model: type) -> int:
    return db.session.execute(select(func.count()).select_from(model)).scalar_one()


def test_the_staging_table_is_unlogged(app: Flask) -> None:
    with app.app_context():
        persistence = db.session.execute(text("SELECT relpersistence FROM pg_class WHERE relname = 'quote_stage'"))
        assert persistence.scalar_one() == "u"


def test_a_batch_whose_staged_rows_vanished_goes_back_to_transform_and_moves_no_checkpoint(
        app: Flask, sources_file: Path, tmp_path: Path) -> None:
    with app.app_context():
        stages = transformed_then_emptied(app, sources_file, tmp_path)
        first, second = stages.batches()[:2]

        stages.load(second)

        assert db.session.get(RawBatch, second.id, populate_existing=True).state == "extracted"
        assert db.session.get(Checkpoint, "daily").batch_id == first.id  # not over the unloaded second
        assert count(MarketQuote) == 3


def test_the_load_task_restages_lost_batches_and_loads_everything_once(app: Flask, sources_file: Path,
                                                                       tmp_path: Path) -> None:
    with app.app_context():
        stages = transformed_then_emptied(app, sources_file, tmp_path)
        snapshots = count(SchemaSnapshot)

    tasks.load(stages.source_run_id)  # in this process, as the worker runs it

    with app.app_context():
        source_run = db.session.get(SourceRun, stages.source_run_id)
        assert source_run.status == "partial"  # the -1 price is a reject
        assert (source_run.inserted, source_run.rejected, source_run.extracted) == (4, 1, 5)
        assert count(MarketQuote) == 4
        assert count(SchemaSnapshot) == snapshots  # the drift check is not recorded twice
        assert {b.state for b in stages.batches()} == {"loaded"}
        assert db.session.get(Checkpoint, "daily").cursor["line"] == 6
