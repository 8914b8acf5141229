"""Say how durable a pipeline transaction's commit must be, and notice what a crash took.

Extract and load commit once per batch and can be redone: a batch whose
commit is lost is extracted again from the last surviving batch's cursor, or
loaded again from the checkpoint, and both writes are idempotent (ON
CONFLICT on the content hash and on the quote's natural key). So their
commits need not wait for the WAL to reach disk.
"""
from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session


def defer_flush(session: Session) -> None:
    """Let the current transaction's commit return before its WAL is flushed (synchronous_commit = off).

    Safe here because a crash can only lose the last few such commits whole and in
    order (never a part of one, never a later one without the earlier): the database
    comes back as it was before them, with the checkpoint, the batch states and the
    rows they covered all agreeing, and the stalled run is resumed from there.
    """
    session.execute(text("SET LOCAL synchronous_commit = off"))


def staged_rows(session: Session, stage_table: str, batch_id: int) -> int:
    """Count a batch's rows in its (UNLOGGED) stage table: recorded at transform, compared at load."""
    return session.execute(text(f"SELECT count(*) FROM {stage_table} WHERE batch_id = :b"), {"b": batch_id}).scalar_one()
