"""What a stage's failure logs when a sibling task closed its source run first: its own error, redacted."""
from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest
from flask import Flask

from kasparro import catalog, stages
from kasparro.db import db
from kasparro.models import SourceRun
from kasparro.pipeline import runs
from tests.pipeline.helpers import HEADER, csv_spec, declare

PASSWORD = f"pw-{uuid.uuid4().hex[:10]}"
ERROR = ("load: IntegrityError: duplicate key value violates unique constraint "
         f"\"uq_news_asset_links_news_item_id_asset_id\" (postgresql://etl:{PASSWORD}@db.example/kasparro)")


def test_a_stage_failing_after_its_source_run_finished_logs_what_failed(
        app: Flask, sources_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "daily.csv"
    path.write_text(HEADER + "bitcoin,2019-04-01,5000.5,1000,2000\n")
    declare(sources_file, {"daily": csv_spec(path)})
    with app.app_context():
        source_run = runs.create_run(db.session, "cli", catalog.select_sources(app.config, None)).run.source_runs[0]
        runs.start_source(db.session, source_run)
        runs.finish_source(db.session, source_run)  # the other load task closed it: all loaded
        db.session.commit()
        source_run_id = source_run.id

        with caplog.at_level(logging.ERROR, logger="kasparro.stages"):
            stages.fail(source_run_id, ERROR, "load")

        closed = db.session.get(SourceRun, source_run_id, populate_existing=True)
        assert (closed.status, closed.error) == ("success", None)  # what the closing task decided stands
    (line,) = [r.getMessage() for r in caplog.records if r.name == "kasparro.stages"]
    assert "None" not in line
    assert "after the source run had finished (success)" in line and "uq_news_asset_links" in line
    assert PASSWORD not in line
