"""Validate a batch's records (their shape against schema drift first, then each record on its own),
and keep the rejects."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import text
from sqlalchemy.orm import Session

from kasparro.models import RawBatch, SourceRun
from kasparro.pipeline import drift, drift_log, targets
from kasparro.sources.base import UNREADABLE, Source, canonical_json


@dataclass
class Validated:
    """The outcome of validating one batch's records (`quotes` holds whatever the source's target validates)."""

    quotes: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    rejects: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


def validate_record(source: Source, payload: Mapping[str, Any]) -> dict[str, Any]:
    """Map and validate one payload; raise ValidationError naming what is wrong."""
    if UNREADABLE in payload:
        raise ValidationError({"_schema": [str(payload[UNREADABLE])]})
    try:
        fields = source.to_unified(payload)
    except KeyError as exc:
        raise ValidationError({"_schema": [f"missing field: {exc.args[0]}"]}) from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValidationError({"_schema": [str(exc) or type(exc).__name__]}) from None
    return targets.of_source(source).validate(fields)


def validate_batch(source: Source, records: list[tuple[int, Mapping[str, Any]]],
                   renames: Mapping[str, str] | None = None) -> Validated:
    """Validate every record of a batch, keeping each failure's reasons; `renames` maps drifted names back first."""
    outcome = Validated()
    for record_id, payload in records:
        try:
            mapped = drift.remap(payload, renames) if renames else payload
            outcome.quotes.append((record_id, validate_record(source, mapped)))
        except ValidationError as exc:
            messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
            outcome.rejects.append((record_id, messages))
    return outcome


def validate_checked(session: Session, batch: RawBatch, source_run: SourceRun, source: Source,
                     records: list[tuple[int, Mapping[str, Any]]], restage: bool) -> Validated:
    """Check a batch's shape for drift (raising SchemaDriftFrozen under `freeze`), then validate its records.

    Records are keyed by any id unique in the batch (a raw record's, a chunk's line). `restage`: the batch
    was checked before (its staged rows were lost), so nothing is recorded twice.
    """
    shape = drift_log.check(session, batch, source_run, source, records, restage)
    if shape.found and shape.policy.mode == "freeze":
        drift_log.record(session, batch, source_run, shape, set())
        raise drift_log.frozen_error(shape)
    outcome = validate_batch(source, records, shape.renames)
    if not restage:
        drift_log.record(session, batch, source_run, shape, {rid for rid, _ in outcome.rejects})
    return outcome


# A replay keeps the run that first rejected a record and notes its own attempt beside it.
_REJECT_AGAIN = {
    False: "run_id = EXCLUDED.run_id, reason = EXCLUDED.reason",
    True: "reason = EXCLUDED.reason, replayed_at = now(), replay_run_id = EXCLUDED.run_id, replay_outcome = 'rejected'",
}


def keep_rejects(session: Session, source_run: SourceRun, rejects: list[tuple[int, dict[str, Any]]],
                 replay: bool = False) -> None:
    """Keep each (raw record id, reason) as a reject of this run; a record rejected before is updated.

    One statement for the batch (one INSERT per reject cost a round trip each). A record named twice keeps
    its last reason, as when they were written in turn. A reason may quote the value it refuses; a lone
    surrogate there is kept as the text of its escape.
    """
    reasons = {rid: canonical_json(reason, lenient=True) for rid, reason in rejects}
    if not reasons:
        return
    session.execute(
        text("INSERT INTO rejected_records (raw_record_id, run_id, source, reason)"
             " SELECT t.rid, :run_id, :source, CAST(t.reason AS jsonb)"
             " FROM unnest(CAST(:rids AS bigint[]), CAST(:reasons AS text[])) AS t(rid, reason)"
             f" ON CONFLICT (raw_record_id) DO UPDATE SET {_REJECT_AGAIN[replay]}"),
        {"rids": list(reasons), "reasons": list(reasons.values()), "run_id": source_run.run_id,
         "source": source_run.source},
    )
