"""Two processes share a source's transform, and a loader may follow it: in process, with real row locks."""
from __future__ import annotations

from pathlib import Path

from flask import Flask
from sqlalchemy import create_engine, func, select, text

from kasparro.db import db
from kasparro.models import Checkpoint, MarketQuote
from kasparro.pipeline.load import load_pending
from kasparro.pipeline.transform import transform_pending
from tests.pipeline.helpers import HEADER, csv_spec, declare
from tests.pipeline.inprocess import LEASE, Stages, start

LINES = [f"coin{n},2019-04-2{n % 3},{n + 1}.5,1000,2000" for n in range(6)]


def _extracted(sources_file: Path, tmp_path: Path) -> Stages:
    path = tmp_path / "daily.csv"
    path.write_text(HEADER + "".join(line + "\n" for line in LINES))
    declare(sources_file, {"daily": csv_spec(path)})
    stages = start("daily")
    stages.extract(batch_size=2)  # three raw chunks of two lines
    return stages


def _transform(stages: Stages, **options: object) -> int:
    return transform_pending(db.session, stages.source_run(), stages.source, stages.kind, stages.overrides, LEASE,
                             **options)


def test_a_batch_another_process_holds_is_passed_over_only_when_asked(app: Flask, sources_file: Path,
                                                                     tmp_path: Path) -> None:
    other = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    with app.app_context():
        stages = _extracted(sources_file, tmp_path)
        first, second, third = stages.batches()
        with other.connect() as peer:  # another worker's transaction, on the second chunk
            peer.execute(text("SELECT id FROM raw_batches WHERE id = :id FOR UPDATE"), {"id": second.id})

            _transform(stages, skip_busy=True)

            states = [b.state for b in stages.batches()]
            peer.rollback()
        assert states == ["loaded", "extracted", "transformed"]  # chunk 1 was next in order: loaded at once

        _transform(stages)  # the chain's own transform: nothing is left behind

        # Chunk 2 is next in order now, so it loads at once; chunk 3 stays staged for load.
        assert [b.state for b in stages.batches()] == ["loaded", "loaded", "transformed"]
    other.dispose()


def test_with_a_loader_following_every_chunk_is_staged_and_loads_in_order(app: Flask, sources_file: Path,
                                                                          tmp_path: Path) -> None:
    with app.app_context():
        stages = _extracted(sources_file, tmp_path)

        _transform(stages, stage_all=lambda: True)

        assert [(b.state, b.staged) for b in stages.batches()] == [("transformed", 2)] * 3
        load_pending(db.session, stages.source_run(), LEASE)
        assert {b.state for b in stages.batches()} == {"loaded"}
        assert db.session.execute(select(func.count()).select_from(MarketQuote)).scalar_one() == 6
        assert db.session.get(Checkpoint, "daily").batch_id == stages.batches()[-1].id
