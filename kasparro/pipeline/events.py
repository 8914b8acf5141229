"""Record what happened to a source's part of a run besides its counters: retries, lost workers, resumes."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kasparro.models import RunEvent, SourceRun
from kasparro.redact import redact_text

MAX_DETAIL = 2000


def record(session: Session, source_run: SourceRun, kind: str, detail: str, stage: str | None = None) -> None:
    """Add an event to the source run's history (the caller commits)."""
    session.add(RunEvent(run_id=source_run.run_id, run_source_id=source_run.id, source=source_run.source,
                         kind=kind, stage=stage, detail=redact_text(detail)[:MAX_DETAIL]))


def count(session: Session, source_run_id: int, kind: str) -> int:
    """Count a source run's events of one kind."""
    return session.execute(
        select(func.count()).select_from(RunEvent)
        .where(RunEvent.run_source_id == source_run_id, RunEvent.kind == kind)
    ).scalar_one()
