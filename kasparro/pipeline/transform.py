"""Turn a raw batch into validated records of its target (quotes, news) waiting to load; reject the rest.

A file's raw chunk is turned by `chunks`; the validation of records is in `records`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from kasparro.errors import RejectBudgetExceeded, SchemaDriftFrozen
from kasparro.models import RawBatch, RawRecord, SourceRun
from kasparro.pipeline import chunks, durability, leases, reject_budget, runs, targets
from kasparro.pipeline.faults import Fault
from kasparro.pipeline.faults import check as check_fault
from kasparro.pipeline.records import Validated, keep_rejects, validate_batch, validate_checked, validate_record
from kasparro.sources.base import Source

__all__ = ["Validated", "validate_batch", "validate_record", "transform_batch", "transform_pending"]


def batch_records(session: Session, batch: RawBatch) -> list[tuple[int, Mapping[str, Any]]]:
    """Return a batch's raw records: its own, or for a reprocess batch the stored ones it re-stages."""
    where = RawRecord.id.in_(batch.record_ids) if batch.record_ids is not None else RawRecord.batch_id == batch.id
    return [(rid, payload) for rid, payload in
            session.execute(select(RawRecord.id, RawRecord.payload).where(where).order_by(RawRecord.id))]


def transform_batch(session: Session, batch: RawBatch, source_run: SourceRun, source: Source, kind: str,
                    overrides: Mapping[tuple[str, str], str], load_now: bool = True) -> bool:
    """Stage a batch's valid records for its target and keep its rejects; False if it was already transformed.

    The batch's shape is checked for schema drift first (see `drift_log`); under `freeze` a drifted
    batch raises SchemaDriftFrozen with its events recorded and nothing staged.
    """
    if batch.chunk_id is not None:
        return chunks.transform_chunk(session, batch, source_run, source, kind, overrides, load_now)
    session.refresh(batch, with_for_update=True)
    if batch.state != "extracted":
        return False
    records = batch_records(session, batch)
    restage = batch.staged is not None  # transformed before, staged rows lost (see load): count nothing twice
    outcome = validate_checked(session, batch, source_run, source, records, restage)
    target = targets.of_source(source)
    replay = source_run.run.trigger == "replay"
    _unstage(session, batch, records, outcome, target.stage_table, replay)
    target.stage(session, batch, source_run, kind, overrides, outcome.quotes)
    keep_rejects(session, source_run, outcome.rejects, replay)
    batch.state, batch.staged = "transformed", durability.staged_rows(session, target.stage_table, batch.id)
    if not restage:
        runs.add_counts(session, source_run, rejected=len(outcome.rejects))
    return True


def transform_pending(session: Session, source_run: SourceRun, source: Source, kind: str,
                      overrides: Mapping[tuple[str, str], str], lease: leases.Terms,
                      faults: tuple[Fault, ...] = (), on_batch: Callable[[RawBatch], None] | None = None,
                      skip_busy: bool = False, stage_all: Callable[[], bool] | None = None) -> int:
    """Transform every extracted batch of a source run, one transaction each; return records transformed.

    Several processes may run this for one source run at once: each claims the batches no other is on
    (SKIP LOCKED), and looks again for batches extracted meanwhile until it finds none to claim.
    `on_batch` is called after each batch commits (the tasks use it to start loading meanwhile).
    `skip_busy`: pass over a batch another process is transforming instead of waiting for it at the end
    (the overlapping transform does; the chain's own transform waits, so no batch is left behind).
    `stage_all`, asked before each batch: stage it even if it could load at once.
    """
    work = _Pass(session, source_run, source, kind, overrides, faults, on_batch, stage_all)
    while work.claimable(lease):
        pass
    if not skip_busy:
        # Then wait for the batches other processes hold, so one whose transform died with its process
        # is not left behind (its lock went with its connection).
        for batch in runs.pending_batches(session, source_run, "extracted"):
            lease.take(session, source_run.source, source_run.run_id)
            work.one(batch)
    return work.records


@dataclass
class _Pass:
    """One transform_pending call: what it transforms with, and what it did so far."""

    session: Session
    source_run: SourceRun
    source: Source
    kind: str
    overrides: Mapping[tuple[str, str], str]
    faults: tuple[Fault, ...]
    on_batch: Callable[[RawBatch], None] | None
    stage_all: Callable[[], bool] | None
    records: int = 0  # records transformed
    loaded: int = 0  # of them, loaded by their transform (raw chunks)

    budget: reject_budget.Budget = field(init=False)

    def __post_init__(self) -> None:
        self.budget = reject_budget.budget_of(self.source_run.run.config.get(self.source_run.source, {}),
                                              self.source_run.source)

    def claimable(self, lease: leases.Terms) -> bool:
        """Transform the extracted batches no other process holds; whether there was any."""
        claimed = False
        for batch in runs.pending_batches(self.session, self.source_run, "extracted"):
            lease.take(self.session, self.source_run.source, self.source_run.run_id)  # commits: claim after it
            if _claim(self.session, batch):
                claimed = True
                self.one(batch)
        return claimed

    def one(self, batch: RawBatch) -> None:
        """Transform one batch and commit."""
        session, source_run = self.session, self.source_run
        try:
            transformed = transform_batch(session, batch, source_run, self.source, self.kind, self.overrides,
                                          load_now=not (self.stage_all and self.stage_all()))
            if transformed:
                reject_budget.check(session, source_run, self.budget)
        except RejectBudgetExceeded:
            if batch.state == "loaded":
                # A raw chunk loaded by its transform would count as loaded, and the run after the fix would
                # not read it again: transform it again, staged only, so it is received by a failed run only.
                session.rollback()
                transform_batch(session, batch, source_run, self.source, self.kind, self.overrides, load_now=False)
            # Keep the batch's rejects (what /rejects shows and a replay takes): the source fails, the
            # batches after this one are not transformed.
            session.commit()
            raise
        except SchemaDriftFrozen:
            session.commit()  # keep the drift events
            raise
        if transformed:
            self.records += batch.new_records
        session.commit()
        check_fault(self.faults, source_run.source, "transform", self.records)
        if batch.state == "loaded":  # a raw chunk loaded by its transform (see chunks.transform_chunk)
            self.loaded += batch.new_records
            check_fault(self.faults, source_run.source, "load", self.loaded)
        if transformed and self.on_batch is not None:
            self.on_batch(batch)


def _claim(session: Session, batch: RawBatch) -> bool:
    """Lock a batch still waiting for transform, unless another transaction holds it; whether it is ours."""
    claimed = session.execute(text("SELECT id FROM raw_batches WHERE id = :id AND state = 'extracted'"
                                   " FOR UPDATE SKIP LOCKED"), {"id": batch.id}).first()
    if claimed is None:
        session.rollback()
    return claimed is not None


def _unstage(session: Session, batch: RawBatch, records: list[tuple[int, Mapping[str, Any]]],
             outcome: Validated, stage_table: str, replay: bool) -> None:
    # A re-received record may still be staged from a run that never loaded it.
    session.execute(text(f"DELETE FROM {stage_table} WHERE raw_record_id = ANY(:ids)"),
                    {"ids": [r for r, _ in records]})
    if batch.record_ids is not None and not replay:
        # Reprocessing: a record that validates now is no longer a reject.
        session.execute(text("DELETE FROM rejected_records WHERE raw_record_id = ANY(:ids)"),
                        {"ids": [rid for rid, _ in outcome.quotes]})
