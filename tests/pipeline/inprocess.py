"""Run a source through extract, transform and load in this process, as the tasks do, without a worker."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app
from sqlalchemy import select, text

from kasparro import catalog
from kasparro.config import PROJECT_ROOT
from kasparro.db import db
from kasparro.models import RawBatch, SourceRun
from kasparro.pipeline import extract as extract_stage
from kasparro.pipeline import identity, leases, runs
from kasparro.pipeline.load import load_batch
from kasparro.pipeline.transform import transform_batch
from kasparro.sources import SourceContext, build_source
from kasparro.sources.base import DEFAULT_BATCH_BYTES, RequestStats, Source

BATCH_SIZE = 4
LEASE = leases.Terms(60, "in-process/1")


@dataclass
class Stages:
    """One source run and the calls the tasks would make on it."""

    source_run_id: int
    source: Source
    kind: str
    overrides: dict[tuple[str, str], str]

    def source_run(self) -> SourceRun:
        """Re-read the source run."""
        return db.session.get(SourceRun, self.source_run_id, populate_existing=True)

    def batches(self) -> list[RawBatch]:
        """Every batch of the run, in seq order."""
        return list(db.session.execute(select(RawBatch).where(RawBatch.run_source_id == self.source_run_id)
                                       .order_by(RawBatch.seq)).scalars())

    def extract(self, batch_size: int = BATCH_SIZE) -> None:
        """Extract as the extract task does (it is skipped once extraction is done)."""
        source_run = self.source_run()
        if source_run.extract_done:
            return
        LEASE.take(db.session, source_run.source, source_run.run_id)
        runs.start_source(db.session, source_run)
        # The source's own byte budget, as the task resolves it (BATCH_MAX_BYTES is not set in tests).
        budget = source_run.run.config[source_run.source].get("max_batch_bytes", DEFAULT_BATCH_BYTES)
        extract_stage.extract(db.session, source_run, self.source, RequestStats(), batch_size, LEASE,
                              batch_bytes=budget)

    def transform(self, batch: RawBatch) -> None:
        """Transform one batch and commit, as the transform task does per batch."""
        transform_batch(db.session, batch, self.source_run(), self.source, self.kind, self.overrides)
        db.session.commit()

    def load(self, batch: RawBatch) -> None:
        """Load one batch and commit, as the load task does per batch."""
        load_batch(db.session, batch, self.source_run())
        db.session.commit()

    def finish(self) -> SourceRun:
        """Close the source run once every batch is loaded, as the last load does; return it."""
        runs.close_if_loaded(db.session, self.source_run())
        db.session.commit()
        return self.source_run()


def start(name: str) -> Stages:
    """Create a run of the declared source `name` (inside an app context) and build its source."""
    specs = catalog.select_sources(current_app.config, [name])
    started = runs.create_run(db.session, "cli", specs)
    run = started.run
    assert started.created, f"run {run.id} was already active"
    db.session.commit()
    spec = run.config[name]
    source = build_source(name, spec, SourceContext(base_dir=PROJECT_ROOT))
    overrides = identity.load_overrides(current_app.config["ASSET_OVERRIDES_FILE"])
    return Stages(run.source_runs[0].id, source, spec.get("ids", spec["kind"]), overrides)


def run_in_process(app: Flask, name: str, batch_size: int = BATCH_SIZE,
                   between: Callable[[Stages], None] | None = None) -> SourceRun:
    """Run source `name` through every stage in order; `between` may meddle after extract. Return its source run."""
    with app.app_context():
        stages = start(name)
        try:
            stages.extract(batch_size)
            if between is not None:
                between(stages)
            for batch in stages.batches():
                stages.transform(batch)
            for batch in stages.batches():
                stages.load(batch)
            source_run = stages.finish()
        except Exception as exc:  # noqa: BLE001 - a failing stage fails the source, as in the tasks
            db.session.rollback()
            runs.fail_source(db.session, stages.source_run_id, f"{type(exc).__name__}: {exc}")
            db.session.commit()
            source_run = stages.source_run()
        db.session.expunge(source_run)
        return source_run


def clean_tables() -> None:
    """Empty every table but Alembic's, as the `_clean_tables` fixture does (inside an app context)."""
    tables = [t.name for t in db.metadata.sorted_tables if t.name != "alembic_version"]
    db.session.execute(text("TRUNCATE " + ", ".join(tables) + " RESTART IDENTITY CASCADE"))
    db.session.commit()


def law_holds(source_run: Any) -> bool:
    """Whether every record read is loaded, rejected, a duplicate or skipped."""
    return source_run.extracted == (source_run.loaded + source_run.rejected + source_run.duplicates
                                    + source_run.skipped)
