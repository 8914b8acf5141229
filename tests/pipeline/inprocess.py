"""Run a source through extract, transform and load in this process, with the tasks' own stage functions.

Each whole stage here is `kasparro.stages.<stage>` under `kasparro.stages.guarded`, exactly what the
Celery task of that stage calls; only Celery's part is left out (retries, and the follow-up messages
that overlap the chain), and a failure fails the source at once, as a task does once out of retries.
`Stages.transform(batch)` / `Stages.load(batch)` do one batch's step, with the functions the stages
call per batch, so a test can force an order no worker would choose.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app
from sqlalchemy import select, text

from kasparro import catalog
from kasparro import stages as task_stages
from kasparro.db import db
from kasparro.models import RawBatch, SourceRun
from kasparro.pipeline import leases, runs
from kasparro.pipeline.load import load_batch
from kasparro.pipeline.transform import transform_batch
from kasparro.sources.base import RequestStats, Source

BATCH_SIZE = 4
WHOLE_STAGES: dict[str, Callable[[SourceRun, RequestStats], None]] = {
    "extract": task_stages.extract, "transform": task_stages.transform, "load": task_stages.load}


def lease() -> leases.Terms:
    """The lease the stages take in this process (inside an app context), for tests that call a step directly."""
    return task_stages.lease_terms()


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

    def deliver(self, stage: str) -> None:
        """Run one whole stage as its task does, with its guard: skipped once the source run is finished."""
        task_stages.guarded(self.source_run_id, stage, WHOLE_STAGES[stage],
                       lambda exc, stats: self.give_up(stage, exc, stats))

    def give_up(self, stage: str, exc: BaseException, stats: RequestStats | None = None) -> None:
        """Fail the source run as a task out of retries does."""
        db.session.rollback()
        task_stages.fail(self.source_run_id, f"{stage}: {exc}", stage, stats)

    def extract(self, batch_size: int = BATCH_SIZE) -> None:
        """Deliver the extract task's work, in batches of `batch_size` records (as BATCH_SIZE sets them)."""
        with batch_size_set(batch_size):
            self.deliver("extract")

    def transform(self, batch: RawBatch) -> None:
        """Transform one batch and commit, as the transform stage does per batch."""
        transform_batch(db.session, batch, self.source_run(), self.source, self.kind, self.overrides,
                        load_now=not task_stages.stage_all())
        db.session.commit()

    def load(self, batch: RawBatch) -> None:
        """Load one batch and commit, as the load stage does per batch."""
        load_batch(db.session, batch, self.source_run())
        db.session.commit()


@contextmanager
def batch_size_set(size: int) -> Iterator[None]:
    """Set BATCH_SIZE on the (session-wide) app for the block, then put the old value back."""
    config = current_app.config
    before, config["BATCH_SIZE"] = config["BATCH_SIZE"], size
    try:
        yield
    finally:
        config["BATCH_SIZE"] = before


def start(name: str) -> Stages:
    """Create a run of the declared source `name` (inside an app context) and build its source as the tasks do."""
    specs = catalog.select_sources(current_app.config, [name])
    started = runs.create_run(db.session, "cli", specs)
    run = started.run
    assert started.created, f"run {run.id} was already active"
    db.session.commit()
    source_run = run.source_runs[0]
    source, kind = task_stages.build(source_run, RequestStats())
    return Stages(source_run.id, source, kind, task_stages.overrides(source))


def run_in_process(app: Flask, name: str, batch_size: int = BATCH_SIZE,
                   between: Callable[[Stages], None] | None = None) -> SourceRun:
    """Run source `name` through the chain's three stages in order; `between` may meddle after extract.

    Return its source run. An error in `between` fails the source, as a worker lost mid-chain would.
    """
    with app.app_context():
        stages = start(name)
        stages.extract(batch_size)
        if between is not None:
            try:
                between(stages)
            except Exception as exc:  # noqa: BLE001 - the meddler's crash is the chain's failure
                stages.give_up("between", exc)
        with batch_size_set(batch_size):
            stages.deliver("transform")
            stages.deliver("load")
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
