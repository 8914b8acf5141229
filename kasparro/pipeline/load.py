"""Load staged records into their target's table (quotes or news) and move the checkpoint, in one transaction."""
from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from kasparro.models import REPAIR_TRIGGERS, RawBatch, SourceRun
from kasparro.pipeline import durability, leases, runs, targets
from kasparro.pipeline.faults import Fault
from kasparro.pipeline.faults import check as check_fault

_CHECKPOINT = text(
    """
    INSERT INTO checkpoints (source, cursor, run_id, batch_id, updated_at)
    VALUES (:source, CAST(:cursor AS jsonb), :run_id, :batch_id, now())
    ON CONFLICT (source) DO UPDATE SET cursor = EXCLUDED.cursor, run_id = EXCLUDED.run_id,
        batch_id = EXCLUDED.batch_id, updated_at = now()
    """
)


# A replayed reject whose record loaded says so, in the transaction that loaded it.
_REPLAYED = """
    UPDATE rejected_records SET replayed_at = now(), replay_run_id = :run_id, replay_outcome = 'loaded'
    WHERE raw_record_id IN (SELECT raw_record_id FROM {stage_table} WHERE batch_id = :batch_id)
"""


@dataclass(frozen=True)
class LoadResult:
    """What loading one batch changed."""

    inserted: int
    updated: int
    unchanged: int


def load_batch(session: Session, batch: RawBatch, source_run: SourceRun) -> LoadResult | None:
    """Upsert a transformed batch into its target and advance the checkpoint with it; None if not loadable now.

    Batches load in order, so the checkpoint only ever covers a gap-free prefix:
    a batch whose predecessor has not loaded yet is left for a later call.
    """
    session.refresh(batch, with_for_update=True)
    if batch.state != "transformed":
        return None
    target = targets.of_run(source_run)
    if not _stage_intact(session, batch, target.stage_table):
        batch.state = "extracted"  # the stage table is UNLOGGED and a crash empties it: transform the batch again
        return None
    if not predecessor_loaded(session, batch):
        return None
    durability.defer_flush(session)
    inserted, updated, staged = target.load(session, batch.id)
    if source_run.run.trigger == "replay":
        session.execute(text(_REPLAYED.format(stage_table=target.stage_table)),
                        {"batch_id": batch.id, "run_id": source_run.run_id})
    session.execute(text(f"DELETE FROM {target.stage_table} WHERE batch_id = :b"), {"b": batch.id})
    return mark_loaded(session, batch, source_run, inserted, updated, staged)


def mark_loaded(session: Session, batch: RawBatch, source_run: SourceRun, inserted: int, updated: int,
                staged: int) -> LoadResult:
    """Record that a batch loaded: its state, the run's counts, and the checkpoint (unless a repair).

    The caller upserted the batch's rows in this same transaction. A raw chunk loads in its transform,
    so batches may load out of order and at once; the checkpoint moves to the end of the gap-free prefix
    of loaded batches, and only in the transaction that extends that prefix (see `_advance_checkpoint`).
    """
    batch.state, batch.written = "loaded", inserted + updated
    result = LoadResult(inserted, updated, staged - inserted - updated)
    # The counts' UPDATE also locks the source run's row until commit: the transactions loading this
    # run's batches pass the checkpoint step one at a time, each seeing what the others committed.
    runs.add_counts(session, source_run, inserted=result.inserted, updated=result.updated,
                    loaded=result.inserted + result.updated, skipped=result.unchanged)
    if source_run.run.trigger not in REPAIR_TRIGGERS:  # a repair read a window or stored data: the checkpoint stays
        _advance_checkpoint(session, batch, source_run)
    return result


# The last batch of the gap-free prefix of a source run's loaded batches. A statement of its own, after the
# lock: under READ COMMITTED it sees every batch another transaction marked loaded and committed.
_LOADED_PREFIX = text(
    """
    SELECT id, seq, cursor_after FROM raw_batches
    WHERE run_source_id = :rs AND state = 'loaded'
      AND seq < coalesce((SELECT min(seq) FROM raw_batches WHERE run_source_id = :rs AND state <> 'loaded'),
                         2147483647)
    ORDER BY seq DESC LIMIT 1
    """
)


def _advance_checkpoint(session: Session, batch: RawBatch, source_run: SourceRun) -> None:
    session.flush()  # this batch's state, before the prefix is read
    end = session.execute(_LOADED_PREFIX, {"rs": source_run.id}).first()
    if end is None or end.seq < batch.seq:
        return  # an earlier batch is still loading: the transaction that loads it moves the checkpoint
    session.execute(_CHECKPOINT, {"source": batch.source, "cursor": json.dumps(end.cursor_after),
                                  "run_id": source_run.run_id, "batch_id": end.id})


def load_pending(session: Session, source_run: SourceRun, lease: leases.Terms,
                 faults: tuple[Fault, ...] = ()) -> int:
    """Load every transformed batch of a source run in order, one transaction each; return records loaded."""
    records = 0
    for batch in runs.pending_batches(session, source_run, "transformed"):
        if records == 0:
            # A rule at 0 fires before the first batch loads, once there is a transformed one to load (not
            # in a load that finds none, which would fire it while the batch is still being transformed).
            check_fault(faults, source_run.source, "load", 0)
        lease.take(session, source_run.source, source_run.run_id)
        result = load_batch(session, batch, source_run)
        session.commit()
        if result is not None:
            records += result.inserted + result.updated + result.unchanged
            check_fault(faults, source_run.source, "load", records)
    refresh = targets.of_run(source_run).refresh
    if refresh is not None:
        refresh(session, source_run.source)
        session.commit()
    return records


def _stage_intact(session: Session, batch: RawBatch, stage_table: str) -> bool:
    """Return whether every row staged at transform is still in the stage table (unknown for older batches)."""
    return batch.staged is None or durability.staged_rows(session, stage_table, batch.id) == batch.staged


def lost_stage(session: Session, source_run: SourceRun) -> bool:
    """Return whether load sent any batch of this source run back to transform (its staged rows were lost)."""
    return any(batch.staged is not None for batch in runs.pending_batches(session, source_run, "extracted"))


def predecessor_loaded(session: Session, batch: RawBatch) -> bool:
    """Return whether a batch may load now: the batch before it in its source run has loaded (or there is none)."""
    state = session.execute(
        text("SELECT state FROM raw_batches WHERE run_source_id = :rs AND seq = :seq"),
        {"rs": batch.run_source_id, "seq": batch.seq - 1},
    ).scalar()
    return state in (None, "loaded")
