"""Check each batch for schema drift and keep what was found: snapshots, drift events, the source's policy.

`check` runs before validation (it says which renames `evolve` maps back);
`record` runs after it (it knows which records were rejected), adds one
`drift_events` row per finding and logs it as a warning. The caller commits.
A source run keeps at most `drift_max_findings` `added` events; the ones past it in a batch become one
`added` event whose field says how many were dropped and names the setting (`drift.cap`).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from kasparro.errors import SchemaDriftFrozen
from kasparro.models import DriftEvent, RawBatch, SchemaSnapshot, SourceRun
from kasparro.pipeline import drift
from kasparro.sources.base import UNREADABLE, Source

logger = logging.getLogger(__name__)
# A field's name as stored and logged: a payload's key can be as long as its record allows.
FIELD_NAME_CHARS = 200


@dataclass
class Check:
    """What a batch's shape showed, and the renames to apply before validation."""

    policy: drift.Policy
    found: list[drift.Drift]
    snapshot: drift.Snapshot
    flat: dict[int, dict[str, Any]] = field(default_factory=dict)
    # Records that all have the same fields, when they were not looked at one by one (a raw chunk).
    uniform: int = 0
    # Names of the `added` fields past `drift_max_findings`, recorded as one event.
    dropped: list[str] = field(default_factory=list)

    @property
    def dropped_note(self) -> str:
        """Name what was dropped and the setting that dropped it, as the field of the event standing for it."""
        return (f"({len(self.dropped)} more added field(s) not listed, "
                f"over drift_max_findings={self.policy.max_findings})")

    @property
    def renames(self) -> dict[str, str]:
        """New field name -> expected one, for the renames this policy applies (only `evolve`)."""
        if self.policy.mode != "evolve":
            return {}
        return {d.new: d.old for d in self.found if d.kind == "renamed" and d.new and d.old}


def previous_snapshot(session: Session, source: str, batch_id: int, restage: bool = False) -> drift.Snapshot | None:
    """Return the source's latest snapshot taken before this batch's (`restage`: before its own one), if any."""
    query = select(SchemaSnapshot.fields).where(SchemaSnapshot.source == source, SchemaSnapshot.batch_id != batch_id)
    if restage:
        own = select(func.min(SchemaSnapshot.id)).where(SchemaSnapshot.batch_id == batch_id).scalar_subquery()
        query = query.where(SchemaSnapshot.id < own)
    return session.execute(query.order_by(SchemaSnapshot.id.desc()).limit(1)).scalar()


def check(session: Session, batch: RawBatch, source_run: SourceRun, source: Source,
          records: Sequence[tuple[int, Mapping[str, Any]]], restage: bool = False) -> Check:
    """Snapshot a batch's shape and compare it with the expected schema and the previous snapshot.

    `restage`: the batch was checked before (its staged rows were lost), so compare as then and keep nothing new.
    """
    expected = source.expected_schema()
    parents = drift.parents_of(expected)
    flat = {rid: drift.flatten(payload, expected, parents) for rid, payload in records if UNREADABLE not in payload}
    found = check_snapshot(session, batch, source_run, source, drift.observe(flat.values()), len(flat), restage)
    found.flat = flat
    return found


def check_snapshot(session: Session, batch: RawBatch, source_run: SourceRun, source: Source,
                   snapshot: drift.Snapshot, records: int, restage: bool = False) -> Check:
    """Compare a snapshot taken elsewhere (a raw chunk's, in SQL) and keep it, as `check` does.

    Every finding is taken to touch all `records` (true of a chunk: each line has every column).
    """
    policy = drift.policy_of(source_run.run.config.get(source_run.source, {}), source_run.source)
    previous = previous_snapshot(session, source_run.source, batch.id, restage)
    found = drift.compare(source.expected_schema(), previous, snapshot, policy.threshold)
    kept, dropped = drift.cap(found, policy.max_findings - added_so_far(session, source_run.id) if found else 0)
    if not restage:
        session.add(SchemaSnapshot(source=source_run.source, run_id=source_run.run_id, batch_id=batch.id,
                                   fields=snapshot, records=records))
    return Check(policy, kept, snapshot, uniform=records, dropped=dropped)


# Advisory lock class for a source run's drift cap (see added_so_far); runs.py's enqueue lock is 7_311_001.
DRIFT_CAP_LOCK = 7_311_002


def added_so_far(session: Session, source_run_id: int) -> int:
    """Count the `added` events a source run recorded in its earlier batches (against drift_max_findings).

    Worker processes transform one run's batches at once, so the count and the events written against it are
    serialized per source run until the transaction ends: two batches counting 0 at once kept twice the cap.
    """
    session.execute(text("SELECT pg_advisory_xact_lock(:k, :id)"),
                    {"k": DRIFT_CAP_LOCK, "id": source_run_id % 2_147_483_647})
    return session.execute(select(func.count()).select_from(DriftEvent).where(
        DriftEvent.run_source_id == source_run_id, DriftEvent.kind == "added")).scalar_one()


def record(session: Session, batch: RawBatch, source_run: SourceRun, outcome: Check, rejected: set[int]) -> None:
    """Add a drift event per finding (and one for the `added` ones dropped), with what was done, and log each."""
    shown = list(outcome.found)
    if outcome.dropped:
        shown.append(drift.Drift("added", outcome.dropped_note, None, None))
    touched = drift.touched(outcome.found, outcome.flat) if outcome.flat else []
    if outcome.flat and outcome.dropped:
        dropped = set(outcome.dropped)
        touched.append([rid for rid, flat in outcome.flat.items() if not dropped.isdisjoint(flat)])
    for index, found in enumerate(shown):
        records = touched[index] if outcome.flat else range(outcome.uniform)
        action = drift.decide(found, outcome.policy, any(rid in rejected for rid in records))
        field, old, new = shortened(found.field), shortened(found.old), shortened(found.new)
        session.add(DriftEvent(source=source_run.source, run_id=source_run.run_id, run_source_id=source_run.id,
                               batch_id=batch.id, field=field, kind=found.kind, old=old, new=new,
                               confidence=found.confidence, action=action, records=len(records)))
        logger.warning("schema drift source=%s batch=%s %s %s (%s -> %s, confidence %s): %s, %d record(s)",
                       source_run.source, batch.id, found.kind, field, old, new, found.confidence, action,
                       len(records), extra={"source": source_run.source, "drift_kind": found.kind, "field": field,
                                            "action": action})


def shortened(name: str | None) -> str | None:
    """Cut a field name to FIELD_NAME_CHARS characters, marking the cut."""
    if name is None or len(name) <= FIELD_NAME_CHARS:
        return name
    return f"{name[:FIELD_NAME_CHARS]}… ({len(name)} characters)"


def frozen_error(outcome: Check) -> SchemaDriftFrozen:
    """Say why a frozen source stops: each finding, plainly."""
    listed = "; ".join([describe(d.kind, shortened(d.field) or "", shortened(d.old), shortened(d.new), d.confidence)
                        for d in outcome.found]
                       + ([outcome.dropped_note] if outcome.dropped else []))
    return SchemaDriftFrozen(f"schema drift under drift_policy=freeze, nothing of the batch loaded: {listed}")


def describe(kind: str, name: str, old: str | None, new: str | None, confidence: Any) -> str:
    """Put one finding in words: `renamed current_price -> currentPrice (0.925)`."""
    if kind == "renamed":
        return f"renamed {old} -> {new} ({float(confidence):.3f})"
    if kind == "type_changed":
        return f"type_changed {name}: {old} -> {new}"
    return f"{kind} {name}"


def summary(session: Session, source_run_id: int) -> str | None:
    """Say what drift a source run met, for its error text; None if it met none."""
    rows = session.execute(
        select(DriftEvent.kind, DriftEvent.field, DriftEvent.old, DriftEvent.new, DriftEvent.action,
               func.max(DriftEvent.confidence), func.count())
        .where(DriftEvent.run_source_id == source_run_id)
        .group_by(DriftEvent.kind, DriftEvent.field, DriftEvent.old, DriftEvent.new, DriftEvent.action)
        .order_by(DriftEvent.field, DriftEvent.kind)
    ).all()
    if not rows:
        return None
    listed = "; ".join(f"{describe(k, f, o, n, c)}: {a}" for k, f, o, n, a, c, _ in rows)
    return f"schema drift ({sum(r[-1] for r in rows)} event(s)): {listed}"
