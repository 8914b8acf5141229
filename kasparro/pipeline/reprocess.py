"""Re-transform and load stored raw records of a source, without reading the source again.

After a mapping fix (a column mapping, a drift policy), the records a source
already sent are run through transform and load again as a new run with
trigger `reprocess`. Its batches re-stage stored raw record ids (`record_ids`):
the records stay in the batches that received them, so a reprocess never
disturbs extract's de-duplication, and it moves no checkpoint. One reprocess
batch per original batch (split at `batch_size`) keeps each batch one shape,
which is what drift detection compares. Identical results change no row (the
load's upsert skips them); a record rejected before and valid now loads and
leaves `rejected_records`.
"""
from __future__ import annotations

from collections.abc import Mapping
from itertools import groupby
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from kasparro.errors import ReprocessRefused
from kasparro.models import RawBatch, RawRecord, SourceRun
from kasparro.pipeline import runs


def stored_batches(session: Session, source: str, run_id: int | None, batch_size: int) -> list[list[int]]:
    """Return a source's stored raw record ids (of one run, if given), grouped by the batch that received them."""
    query = select(RawRecord.batch_id, RawRecord.id).where(RawRecord.source == source)
    if run_id is not None:
        query = query.where(RawRecord.run_id == run_id)
    rows = session.execute(query.order_by(RawRecord.batch_id, RawRecord.id)).all()
    groups = [[rid for _, rid in members] for _, members in groupby(rows, key=lambda row: row[0])]
    return [group[i:i + batch_size] for group in groups for i in range(0, len(group), batch_size)]


def stage(session: Session, source: str, spec: Mapping[str, Any], batch_size: int,
          run_id: int | None = None) -> runs.RunStart:
    """Record a reprocess run of `source` whose batches re-stage its stored records (the caller commits)."""
    batches = stored_batches(session, source, run_id, batch_size)
    if not batches:
        where = f" received by run {run_id}" if run_id is not None else ""
        raise ReprocessRefused(f"no stored raw records{where} to reprocess", source=source)
    start = runs.create_run(session, "reprocess", {source: spec})
    if not start.created:
        raise ReprocessRefused(f"run {start.busy[source]} is working on it; reprocess once it ends", source=source)
    (source_run,) = start.run.source_runs
    for seq, ids in enumerate(batches, 1):
        session.add(RawBatch(run_source_id=source_run.id, source=source, seq=seq, cursor_after={},
                             received=len(ids), new_records=len(ids), record_ids=ids))
    runs.add_counts(session, source_run, extracted=sum(map(len, batches)))
    session.execute(update(SourceRun).where(SourceRun.id == source_run.id).values(extract_done=True))
    runs.start_source(session, source_run)
    session.flush()
    return start
