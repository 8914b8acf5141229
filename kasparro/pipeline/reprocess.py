"""Re-transform and load stored raw records, without reading the source again: reprocess and replay.

After a mapping or validation fix, the records a source already sent are run
through transform and load again as a new run: trigger `reprocess` for all of a
source's records (of one run, or received since a time), trigger `replay` for
the records that were rejected and have not loaded since. Its batches re-stage
stored raw record ids (`record_ids`): the records stay in the batches that
received them, so this never disturbs extract's de-duplication, and it moves no
checkpoint. One batch per original batch (split at `batch_size`) keeps each
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

from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session

from kasparro.errors import NothingToRepair
from kasparro.models import RawBatch, RawRecord, RejectedRecord, SourceRun
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


def _grouped(session: Session, query: Select[Any], batch_size: int) -> list[list[int]]:
    rows = session.execute(query.order_by(RawRecord.batch_id, RawRecord.id)).all()
    groups = [[rid for _, rid in members] for _, members in groupby(rows, key=lambda row: row[0])]
    return [group[i:i + batch_size] for group in groups for i in range(0, len(group), batch_size)]


def stored_batches(session: Session, source: str, selection: Selection, batch_size: int) -> list[list[int]]:
    """Return a source's stored raw record ids that `selection` picks, grouped by the batch that received them."""
    query = select(RawRecord.batch_id, RawRecord.id).where(RawRecord.source == source)
    if selection.run_id is not None:
        query = query.where(RawRecord.run_id == selection.run_id)
    if selection.since is not None:
        query = query.where(RawRecord.received_at >= selection.since)
    return _grouped(session, query, batch_size)


def rejected_batches(session: Session, source: str, selection: Selection, batch_size: int) -> list[list[int]]:
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
          batches: Mapping[str, list[list[int]]]) -> runs.RunStart:
    """Record a run over `specs` whose batches re-stage the given record ids per source (the caller commits).

    A source another run holds is left out and reported in `busy`, as for any trigger.
    """
    start = runs.create_run(session, trigger, specs)
    if not start.created:
        return start
    for source_run in start.run.source_runs:
        for seq, ids in enumerate(batches[source_run.source], 1):
            session.add(RawBatch(run_source_id=source_run.id, source=source_run.source, seq=seq, cursor_after={},
                                 received=len(ids), new_records=len(ids), record_ids=ids))
        runs.add_counts(session, source_run, extracted=sum(map(len, batches[source_run.source])))
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
