"""The quotes target: stage validated quotes with their canonical assets, and upsert them into market_quotes."""
from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from kasparro.models import RawBatch, SourceRun
from kasparro.pipeline import identity
from kasparro.pipeline.pgcopy import copy_rows
from kasparro.pipeline.targets import Target, Valid
from kasparro.pipeline.validation import load_quote

QUOTE_COLUMNS = ("batch_id", "run_id", "source", "asset_id", "observed_at", "price_usd", "market_cap_usd",
                 "volume_24h_usd", "percent_change_24h")
STAGE_COLUMNS = ("raw_record_id", *QUOTE_COLUMNS)
# A quote read from a raw chunk (pipeline/chunks.py) traces back to the chunk and its line instead.
CHUNK_STAGE_COLUMNS = ("raw_chunk_id", "raw_line", *QUOTE_COLUMNS)

# DISTINCT ON: one row per key even if a batch repeats it (ON CONFLICT may touch
# a row once per statement; the last line or record of a key wins). The batches of one run
# may load in any order and at once (see load.mark_loaded): a row written by a later batch of the
# same run is kept (batch ids grow with a run's batches, as extract adds them one after another),
# so the outcome is that of loading them in order. A later batch of the run that brings the same values
# still takes the row, though only its batch_id: else a batch between the two, loading last, would take
# the row with its older values. Values, lineage and updated_at change only with the values, and
# another run's identical values touch nothing. Rows come out of DISTINCT ON in key order, so two loads
# that share keys lock them in the same order. `{staged}` is what the batch's quotes are read from.
# Counted by what the statement left in each row it returned (a partitioned table cannot return `xmax`):
# inserted, if never updated and ingested by this transaction (now() is its start); updated, if
# updated_at is now(); else the values were the same (a batch_id taken over), counted as unchanged.
_SAME = """(q.price_usd, q.market_cap_usd, q.volume_24h_usd, q.percent_change_24h)
           IS NOT DISTINCT FROM (EXCLUDED.price_usd, EXCLUDED.market_cap_usd,
                                 EXCLUDED.volume_24h_usd, EXCLUDED.percent_change_24h)"""
_UPSERT_TEMPLATE = """
    WITH staged AS (
        SELECT DISTINCT ON (asset_id, observed_at) * FROM ({staged}) AS batch
        ORDER BY asset_id, observed_at, raw_line DESC, raw_record_id DESC
    ), written AS (
        INSERT INTO market_quotes AS q (asset_id, source, observed_at, price_usd, market_cap_usd,
                                        volume_24h_usd, percent_change_24h, raw_record_id, raw_chunk_id,
                                        raw_line, run_id, batch_id)
        SELECT asset_id, source, observed_at, price_usd, market_cap_usd, volume_24h_usd,
               percent_change_24h, raw_record_id, raw_chunk_id, raw_line, run_id, batch_id
        FROM staged
        ON CONFLICT (source, asset_id, observed_at) DO UPDATE SET
            price_usd = EXCLUDED.price_usd, market_cap_usd = EXCLUDED.market_cap_usd,
            volume_24h_usd = EXCLUDED.volume_24h_usd, percent_change_24h = EXCLUDED.percent_change_24h,
            raw_record_id = CASE WHEN {same} THEN q.raw_record_id ELSE EXCLUDED.raw_record_id END,
            raw_chunk_id = CASE WHEN {same} THEN q.raw_chunk_id ELSE EXCLUDED.raw_chunk_id END,
            raw_line = CASE WHEN {same} THEN q.raw_line ELSE EXCLUDED.raw_line END,
            run_id = EXCLUDED.run_id, batch_id = EXCLUDED.batch_id,
            updated_at = CASE WHEN {same} THEN q.updated_at ELSE now() END
        WHERE CASE WHEN q.run_id = EXCLUDED.run_id THEN coalesce(q.batch_id, 0) < EXCLUDED.batch_id
                   ELSE NOT {same} END
        RETURNING (q.updated_at IS NULL AND q.ingested_at = now()) AS inserted,
                  coalesce(q.updated_at = now(), false) AS changed
    )
    SELECT count(*) FILTER (WHERE inserted) AS inserted,
           count(*) FILTER (WHERE changed) AS updated,
           (SELECT count(*) FROM ({staged}) AS batch) AS staged
    FROM written
"""
_UPSERT = text(_UPSERT_TEMPLATE.format(staged="SELECT * FROM quote_stage WHERE batch_id = :batch_id",
                                      same=_SAME))
# A raw chunk's typed rows loaded straight from its TEMP table (pipeline/chunks.py), with their assets.
_CHUNK_ROWS = """
    SELECT a.asset_id, :source AS source, t.observed_at, t.price_usd, t.market_cap_usd, t.volume_24h_usd,
           t.percent_change_24h, NULL::bigint AS raw_record_id, CAST(:chunk AS bigint) AS raw_chunk_id,
           t.line AS raw_line, CAST(:run AS bigint) AS run_id, CAST(:batch AS bigint) AS batch_id
    FROM chunk_typed t JOIN asset_aliases a ON a.source = :source AND a.source_asset_id = t.sid"""
_UPSERT_CHUNK = text(_UPSERT_TEMPLATE.format(staged=_CHUNK_ROWS, same=_SAME))
_INSERT_CHUNK = text(f"""
    INSERT INTO market_quotes (asset_id, source, observed_at, price_usd, market_cap_usd, volume_24h_usd,
                               percent_change_24h, raw_record_id, raw_chunk_id, raw_line, run_id, batch_id)
    {_CHUNK_ROWS}""")
# How many of the source's quotes lie inside the chunk's spans (per asset, its first .. last time in the
# chunk), counting up to :cap: one range scan of the unique index per asset. 0 means every key of the
# chunk is new; a few (a neighbouring chunk sharing the edge of a span) mean it most likely is.
_TAKEN_IN_SPANS = text(
    """
    SELECT count(*) FROM (
        SELECT 1 FROM (SELECT a.asset_id, min(t.observed_at) AS first_at, max(t.observed_at) AS last_at
                       FROM chunk_typed t JOIN asset_aliases a ON a.source = :source AND a.source_asset_id = t.sid
                       GROUP BY a.asset_id) AS span
        JOIN market_quotes q ON q.source = :source AND q.asset_id = span.asset_id
                             AND q.observed_at BETWEEN span.first_at AND span.last_at
        LIMIT :cap) AS taken
    """
)
# What makes the plain INSERT give way to the upsert: a key another process inserted meanwhile or that the
# chunk holds twice (unique_violation), or two inserts waiting on each other's keys (deadlock_detected).
_GIVE_WAY = {"23505", "40P01"}

def stage(session: Session, batch: RawBatch, source_run: SourceRun, kind: str,
          overrides: Mapping[tuple[str, str], str], quotes: Valid, chunk_id: int | None = None) -> None:
    """Resolve each quote's canonical asset and stage the quotes of a batch.

    Each quote's id is its raw record's, or with `chunk_id` its line in that raw chunk.
    """
    refs = {q["source_asset_id"]: identity.coin_ref(q) for _, q in quotes}
    assets = identity.resolve(session, source_run.source, kind, refs, overrides)
    lineage: tuple[int, ...] = () if chunk_id is None else (chunk_id,)
    copy_rows(session, "quote_stage", STAGE_COLUMNS if chunk_id is None else CHUNK_STAGE_COLUMNS, (
        (*lineage, rid, batch.id, source_run.run_id, source_run.source, assets[q["source_asset_id"]],
         q["observed_at"].isoformat(), q["price_usd"], q["market_cap_usd"], q["volume_24h_usd"],
         q["percent_change_24h"])
        for rid, q in quotes
    ))


def load(session: Session, batch_id: int) -> tuple[int, int, int]:
    """Upsert a batch's staged quotes; return (inserted, updated, staged)."""
    inserted, updated, staged = session.execute(_UPSERT, {"batch_id": batch_id}).one()
    return inserted, updated, staged


def load_chunk(session: Session, chunk_id: int, batch_id: int, source: str, run_id: int,
               rows: int) -> tuple[int, int, int]:
    """Load a raw chunk's typed rows (TEMP `chunk_typed`) without staging them; return (inserted, updated, rows).

    Where the chunk's keys are most likely all new (a first load, an append: few or none of the source's
    quotes lie in its spans), a plain INSERT: the upsert's conflict checks, sort and counts cost about a
    third more per row. It runs under a savepoint, and if a key turns out to be taken after all (or the
    chunk holds a key twice), the upsert does the work instead; the INSERT's work is lost, at most one
    chunk's worth.
    """
    values = {"chunk": chunk_id, "batch": batch_id, "source": source, "run": run_id}
    cap = max(rows // 10, 1)
    if session.execute(_TAKEN_IN_SPANS, {"source": source, "cap": cap}).scalar_one() < cap:
        try:
            with session.begin_nested():
                inserted = session.execute(_INSERT_CHUNK, values).rowcount
            return inserted, 0, inserted
        except DBAPIError as exc:
            if getattr(exc.orig, "pgcode", None) not in _GIVE_WAY:
                raise
    inserted, updated, staged = session.execute(_UPSERT_CHUNK, values).one()
    return inserted, updated, staged

TARGET = Target("quotes", "quote_stage", load_quote, stage, load)
