"""Re-transform and load stored raw records, without reading the source again: reprocess and replay.

After a mapping or validation fix, the records a source already sent are run
through transform and load again as a new run: trigger `reprocess` for all of a
source's records (of one run, or received since a time), trigger `replay` for
the records that were rejected and have not loaded since. Its batches re-stage
stored raw record ids (`record_ids`), or a file's whole raw chunks (`chunk_id`,
read again by PostgreSQL as at first): the records stay in the batches that
received them, so this never disturbs extract's de-duplication, and it moves no
checkpoint. A replay takes rejects only, and a chunk's rejected line is a raw
record of its own. One batch per original batch (split at `batch_size`) keeps each
batch one shape, which is what drift detection compares. Identical results
change no row (the load's upsert skips them). A reprocessed record that is valid
now leaves `rejected_records`; a replayed one stays there, marked with when,
by which run, and whether it loaded or was rejected again.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from kasparro.errors import NothingToRepair
from kasparro.models import RawBatch, RawChunk, RawRecord, RejectedRecord, SourceRun
from kasparro.pipeline import runs


@dataclass(frozen=True)
class Selection:
    """Which stored records a reprocess or replay takes: those of one run, and/or received since a time."""

    run_id: int | None = None
    since: datetime | None = None

    def describe(self) -> str:
        """Say which records were asked for, for messages."""
        parts = [f"received by run {self.run_id}" if self.run_id is not None else "",
                 f"received since {self.since.isoformat()}" if self.since is not None else ""]
        return " ".join(p for p in parts if p)


@dataclass(frozen=True)
class Stored:
    """One batch of a repair run: stored raw record ids, or a whole raw chunk of a file (`chunk_id`, its `size`)."""

    record_ids: list[int] | None = None
    chunk_id: int | None = None
    size: int = 0
    # The batch that first received it: repair batches keep the order the data came in (the last line of a key wins).
    first_batch: int = 0

    @property
    def records(self) -> int:
        """How many records the batch holds."""
        return len(self.record_ids) if self.record_ids is not None else self.size


def _grouped(session: Session, query: Select[Any], batch_size: int) -> list[Stored]:
    rows = session.execute(query.order_by(RawRecord.batch_id, RawRecord.id)).all()
    groups = [(batch_id, [rid for _, rid in members]) for batch_id, members in groupby(rows, key=lambda row: row[0])]
    return [Stored(record_ids=group[i:i + batch_size], first_batch=batch_id)
            for batch_id, group in groups for i in range(0, len(group), batch_size)]


def stored_batches(session: Session, source: str, selection: Selection, batch_size: int) -> list[Stored]:
    """Return what a source stored that `selection` picks: its raw chunks, and record ids grouped by batch."""
    # A rejected line of a chunk is a raw record too; its chunk already covers it.
    query = select(RawRecord.batch_id, RawRecord.id).where(RawRecord.source == source, RawRecord.chunk_id.is_(None))
    chunks = (select(RawChunk.id, RawChunk.records, func.min(RawBatch.id))
              .join(RawBatch, RawBatch.chunk_id == RawChunk.id).where(RawChunk.source == source)
              .group_by(RawChunk.id))
    if selection.run_id is not None:
        query = query.where(RawRecord.run_id == selection.run_id)
        chunks = chunks.where(RawChunk.run_id == selection.run_id)
    if selection.since is not None:
        query = query.where(RawRecord.received_at >= selection.since)
        chunks = chunks.where(RawChunk.received_at >= selection.since)
    stored = _grouped(session, query, batch_size) + [
        Stored(chunk_id=chunk_id, size=size, first_batch=first) for chunk_id, size, first in session.execute(chunks)]
    return sorted(stored, key=lambda batch: batch.first_batch)


def rejected_batches(session: Session, source: str, selection: Selection, batch_size: int) -> list[Stored]:
    """Return a source's rejected record ids not loaded by a replay yet (rejected by one run, or since a time)."""
    query = (select(RawRecord.batch_id, RawRecord.id).join(RejectedRecord, RejectedRecord.raw_record_id == RawRecord.id)
             .where(RejectedRecord.source == source, RejectedRecord.replay_outcome.is_distinct_from("loaded")))
    if selection.run_id is not None:
        query = query.where(RejectedRecord.run_id == selection.run_id)
    if selection.since is not None:
        query = query.where(RejectedRecord.created_at >= selection.since)
    return _grouped(session, query, batch_size)


def sources_with_rejects(session: Session, names: list[str]) -> list[str]:
    """Return which of `names` have rejects that no replay has loaded."""
    return sorted(session.execute(
        select(RejectedRecord.source).distinct()
        .where(RejectedRecord.source.in_(names), RejectedRecord.replay_outcome.is_distinct_from("loaded"))
    ).scalars())


def stage(session: Session, trigger: str, specs: Mapping[str, Mapping[str, Any]],
          batches: Mapping[str, list[Stored]]) -> runs.RunStart:
    """Record a run over `specs` whose batches re-stage the given record ids per source (the caller commits).

    A source another run holds is left out and reported in `busy`, as for any trigger.
    """
    start = runs.create_run(session, trigger, specs)
    if not start.created:
        return start
    for source_run in start.run.source_runs:
        for seq, stored in enumerate(batches[source_run.source], 1):
            session.add(RawBatch(run_source_id=source_run.id, source=source_run.source, seq=seq, cursor_after={},
                                 received=stored.records, new_records=stored.records, record_ids=stored.record_ids,
                                 chunk_id=stored.chunk_id))
        runs.add_counts(session, source_run, extracted=sum(stored.records for stored in batches[source_run.source]))
        session.execute(update(SourceRun).where(SourceRun.id == source_run.id).values(extract_done=True))
        runs.start_source(session, source_run)
    session.flush()
    return start


def stage_reprocess(session: Session, source: str, spec: Mapping[str, Any], selection: Selection,
                    batch_size: int) -> runs.RunStart:
    """Record a reprocess run of a source's stored records; refuse when none match (the caller commits)."""
    batches = stored_batches(session, source, selection, batch_size)
    if not batches:
        where = f" {selection.describe()}" if selection.describe() else ""
        raise NothingToRepair(f"no stored raw records{where} to reprocess", source=source)
    return stage(session, "reprocess", {source: spec}, {source: batches})


def stage_replay(session: Session, specs: Mapping[str, Mapping[str, Any]], selection: Selection,
                 batch_size: int, named: bool) -> runs.RunStart:
    """Record a replay run of the sources' outstanding rejects (the caller commits).

    A source named explicitly is replayed even with nothing outstanding (a repeated
    replay is an empty run that changes nothing); otherwise only sources with
    outstanding rejects are, and none at all is refused.
    """
    wanted = list(specs) if named else sources_with_rejects(session, list(specs))
    if not wanted:
        raise NothingToRepair("no rejected records are waiting for a replay")
    batches = {name: rejected_batches(session, name, selection, batch_size) for name in wanted}
    return stage(session, "replay", {name: specs[name] for name in wanted}, batches)
