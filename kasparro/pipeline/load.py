"""Load staged quotes into the unified table and move the checkpoint, in one transaction."""
from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from kasparro.models import REPAIR_TRIGGERS, RawBatch, SourceRun
from kasparro.pipeline import leases, runs
from kasparro.pipeline.faults import Fault
from kasparro.pipeline.faults import check as check_fault

# DISTINCT ON: one row per key even if a batch repeats it (ON CONFLICT may touch
# a row once per statement). The WHERE keeps identical re-loads from rewriting rows.
_UPSERT = text(
    """
    WITH staged AS (
        SELECT DISTINCT ON (asset_id, observed_at) *
        FROM quote_stage WHERE batch_id = :batch_id
        ORDER BY asset_id, observed_at, raw_record_id DESC
    ), written AS (
        INSERT INTO market_quotes AS q (asset_id, source, observed_at, price_usd, market_cap_usd,
                                        volume_24h_usd, percent_change_24h, raw_record_id, run_id)
        SELECT asset_id, source, observed_at, price_usd, market_cap_usd, volume_24h_usd,
               percent_change_24h, raw_record_id, run_id
        FROM staged
        ON CONFLICT (source, asset_id, observed_at) DO UPDATE SET
            price_usd = EXCLUDED.price_usd, market_cap_usd = EXCLUDED.market_cap_usd,
            volume_24h_usd = EXCLUDED.volume_24h_usd, percent_change_24h = EXCLUDED.percent_change_24h,
            raw_record_id = EXCLUDED.raw_record_id, run_id = EXCLUDED.run_id, updated_at = now()
        WHERE (q.price_usd, q.market_cap_usd, q.volume_24h_usd, q.percent_change_24h)
              IS DISTINCT FROM (EXCLUDED.price_usd, EXCLUDED.market_cap_usd,
                                EXCLUDED.volume_24h_usd, EXCLUDED.percent_change_24h)
        RETURNING (xmax = 0) AS inserted
    )
    SELECT count(*) FILTER (WHERE inserted) AS inserted,
           count(*) FILTER (WHERE NOT inserted) AS updated,
           (SELECT count(*) FROM quote_stage WHERE batch_id = :batch_id) AS staged
    FROM written
    """
)

_CHECKPOINT = text(
    """
    INSERT INTO checkpoints (source, cursor, run_id, batch_id, updated_at)
    VALUES (:source, CAST(:cursor AS jsonb), :run_id, :batch_id, now())
    ON CONFLICT (source) DO UPDATE SET cursor = EXCLUDED.cursor, run_id = EXCLUDED.run_id,
        batch_id = EXCLUDED.batch_id, updated_at = now()
    """
)


# A replayed reject whose record loaded says so, in the transaction that loaded it.
_REPLAYED = text(
    """
    UPDATE rejected_records SET replayed_at = now(), replay_run_id = :run_id, replay_outcome = 'loaded'
    WHERE raw_record_id IN (SELECT raw_record_id FROM quote_stage WHERE batch_id = :batch_id)
    """
)


@dataclass(frozen=True)
class LoadResult:
    """What loading one batch changed."""

    inserted: int
    updated: int
    unchanged: int


def load_batch(session: Session, batch: RawBatch, source_run: SourceRun) -> LoadResult | None:
    """Upsert a transformed batch and advance the checkpoint with it; None if not loadable now.

    Batches load in order, so the checkpoint only ever covers a gap-free prefix:
    a batch whose predecessor has not loaded yet is left for a later call.
    """
    session.refresh(batch, with_for_update=True)
    if batch.state != "transformed" or not _predecessor_loaded(session, batch):
        return None
    inserted, updated, staged = session.execute(_UPSERT, {"batch_id": batch.id}).one()
    trigger = source_run.run.trigger
    if trigger == "replay":
        session.execute(_REPLAYED, {"batch_id": batch.id, "run_id": source_run.run_id})
    if trigger not in REPAIR_TRIGGERS:  # a repair read a window or stored records: the checkpoint stays
        session.execute(_CHECKPOINT, {"source": batch.source, "cursor": json.dumps(batch.cursor_after),
                                      "run_id": source_run.run_id, "batch_id": batch.id})
    session.execute(text("DELETE FROM quote_stage WHERE batch_id = :b"), {"b": batch.id})
    batch.state = "loaded"
    result = LoadResult(inserted, updated, staged - inserted - updated)
    runs.add_counts(session, source_run, inserted=result.inserted, updated=result.updated,
                    loaded=result.inserted + result.updated, skipped=result.unchanged)
    return result


def load_pending(session: Session, source_run: SourceRun, lease: leases.Terms,
                 faults: tuple[Fault, ...] = ()) -> int:
    """Load every transformed batch of a source run in order, one transaction each; return records loaded."""
    records = 0
    check_fault(faults, source_run.source, "load", records)
    for batch in runs.pending_batches(session, source_run, "transformed"):
        lease.take(session, source_run.source, source_run.run_id)
        result = load_batch(session, batch, source_run)
        session.commit()
        if result is not None:
            records += result.inserted + result.updated + result.unchanged
            check_fault(faults, source_run.source, "load", records)
    return records


def _predecessor_loaded(session: Session, batch: RawBatch) -> bool:
    state = session.execute(
        text("SELECT state FROM raw_batches WHERE run_source_id = :rs AND seq = :seq"),
        {"rs": batch.run_source_id, "seq": batch.seq - 1},
    ).scalar()
    return state in (None, "loaded")
