"""The quotes target: stage validated quotes with their canonical assets, and upsert them into market_quotes."""
from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import text
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
# a row once per statement; the last line or record of a key wins). The WHERE keeps
# identical re-loads from rewriting rows. `{staged}` is what the batch's quotes are read from.
_UPSERT_TEMPLATE = """
    WITH staged AS (
        SELECT DISTINCT ON (asset_id, observed_at) * FROM ({staged}) AS batch
        ORDER BY asset_id, observed_at, raw_line DESC, raw_record_id DESC
    ), written AS (
        INSERT INTO market_quotes AS q (asset_id, source, observed_at, price_usd, market_cap_usd,
                                        volume_24h_usd, percent_change_24h, raw_record_id, raw_chunk_id,
                                        raw_line, run_id)
        SELECT asset_id, source, observed_at, price_usd, market_cap_usd, volume_24h_usd,
               percent_change_24h, raw_record_id, raw_chunk_id, raw_line, run_id
        FROM staged
        ON CONFLICT (source, asset_id, observed_at) DO UPDATE SET
            price_usd = EXCLUDED.price_usd, market_cap_usd = EXCLUDED.market_cap_usd,
            volume_24h_usd = EXCLUDED.volume_24h_usd, percent_change_24h = EXCLUDED.percent_change_24h,
            raw_record_id = EXCLUDED.raw_record_id, raw_chunk_id = EXCLUDED.raw_chunk_id,
            raw_line = EXCLUDED.raw_line, run_id = EXCLUDED.run_id, updated_at = now()
        WHERE (q.price_usd, q.market_cap_usd, q.volume_24h_usd, q.percent_change_24h)
              IS DISTINCT FROM (EXCLUDED.price_usd, EXCLUDED.market_cap_usd,
                                EXCLUDED.volume_24h_usd, EXCLUDED.percent_change_24h)
        RETURNING (xmax = 0) AS inserted
    )
    SELECT count(*) FILTER (WHERE inserted) AS inserted,
           count(*) FILTER (WHERE NOT inserted) AS updated,
           (SELECT count(*) FROM ({staged}) AS batch) AS staged
    FROM written
"""
_UPSERT = text(_UPSERT_TEMPLATE.format(staged="SELECT * FROM quote_stage WHERE batch_id = :batch_id"))
# A raw chunk's typed rows loaded straight from its TEMP table (pipeline/chunks.py), with their assets.
_UPSERT_CHUNK = text(_UPSERT_TEMPLATE.format(staged="""
    SELECT a.asset_id, :source AS source, t.observed_at, t.price_usd, t.market_cap_usd, t.volume_24h_usd,
           t.percent_change_24h, NULL::bigint AS raw_record_id, CAST(:chunk AS bigint) AS raw_chunk_id,
           t.line AS raw_line, CAST(:run AS bigint) AS run_id
    FROM chunk_typed t JOIN asset_aliases a ON a.source = :source AND a.source_asset_id = t.sid"""))


def stage(session: Session, batch: RawBatch, source_run: SourceRun, kind: str,
          overrides: Mapping[tuple[str, str], str], quotes: Valid, chunk_id: int | None = None) -> None:
    """Resolve each quote's canonical asset and stage the quotes of a batch.

    Each quote's id is its raw record's, or with `chunk_id` its line in that raw chunk.
    """
    refs = {q["source_asset_id"]: identity.CoinRef(q["source_asset_id"], q.get("symbol"), q.get("name"))
            for _, q in quotes}
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


def load_chunk(session: Session, chunk_id: int, source: str, run_id: int) -> tuple[int, int, int]:
    """Upsert a raw chunk's typed rows (TEMP `chunk_typed`) without staging them; return (inserted, updated, rows)."""
    inserted, updated, staged = session.execute(_UPSERT_CHUNK, {"chunk": chunk_id, "source": source,
                                                                "run": run_id}).one()
    return inserted, updated, staged


TARGET = Target("quotes", "quote_stage", load_quote, stage, load)
