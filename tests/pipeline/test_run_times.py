"""A run's times are when things happened, not when their transaction began."""
from __future__ import annotations

import time
from pathlib import Path

from flask import Flask
from sqlalchemy import func, select

from kasparro import catalog
from kasparro.db import db
from kasparro.models import Run, SourceRun
from kasparro.pipeline import runs
from tests.pipeline.helpers import HEADER, csv_spec, declare


def test_a_source_run_finishing_at_the_end_of_a_long_load_is_stamped_then(
        app: Flask, sources_file: Path, tmp_path: Path) -> None:
    # The load task closes the source in the transaction that loaded its last batch and ran the quality rules:
    # now() there is that transaction's start, and the run's duration would leave the load out.
    path = tmp_path / "daily.csv"
    path.write_text(HEADER + "bitcoin,2019-04-01,5000.5,1000,2000\n")
    declare(sources_file, {"daily": csv_spec(path)})
    with app.app_context():
        source_run = runs.create_run(db.session, "cli", catalog.select_sources(app.config, None)).run.source_runs[0]
        runs.start_source(db.session, source_run)
        db.session.commit()
        began = db.session.execute(select(func.now())).scalar_one()  # the closing transaction starts here
        time.sleep(0.5)  # the last batch's load, the quality rules
        runs.finish_source(db.session, source_run)
        db.session.commit()

        closed = db.session.get(SourceRun, source_run.id, populate_existing=True)
        run = db.session.get(Run, source_run.run_id, populate_existing=True)
    assert (closed.finished_at - began).total_seconds() >= 0.5
    assert (run.finished_at - began).total_seconds() >= 0.5
