"""Find source runs that nobody is working on any more, and decide whether to resume them or give up.

A running source run is stalled when its lease lapsed and either the worker
that held it is gone (its liveness key expired) or nothing renewed it for
`stalled_after` seconds (its messages were lost, e.g. with a Redis restart).
A queued one is stalled when no worker picked it up for `stalled_after`
seconds. Resuming sends its chain again: every stage is idempotent and picks
up after the last batch written, so a duplicate costs a lookup, never data.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from kasparro.models import SourceRun
from kasparro.pipeline import events, leases, runs

# The holder written on a lease by the reaper itself: it only keeps the source
# reserved for the chain it resent, and is never "a worker that died".
REAPER = "reaper"

_LAPSED = text(
    """
    SELECT rs.id, l.holder, extract(epoch FROM now() - coalesce(l.expires_at, rs.started_at)) AS lapsed_for
    FROM run_sources rs
    LEFT JOIN source_leases l ON l.source = rs.source AND l.run_id = rs.run_id
    WHERE rs.status = 'running' AND coalesce(l.expires_at, rs.started_at) < now()
    ORDER BY rs.id
    """
)

_UNSTARTED = text(
    """
    SELECT rs.id, extract(epoch FROM now() - r.created_at) FROM run_sources rs JOIN runs r ON r.id = rs.run_id
    WHERE rs.status = 'queued' AND r.created_at < now() - make_interval(secs => :after)
    ORDER BY rs.id
    """
)


@dataclass(frozen=True)
class Stalled:
    """A source run nobody is working on, and why we think so."""

    source_run_id: int
    reason: str
    interrupted: bool


def find_stalled(session: Session, alive: Callable[[list[str]], set[str]], stalled_after: float) -> list[Stalled]:
    """Return the source runs to resume: lapsed under a dead worker, silent too long, or never picked up."""
    lapsed = session.execute(_LAPSED).all()
    workers = [holder for _, holder, _ in lapsed if holder and holder != REAPER]
    live = alive(workers) if workers else set()
    found = []
    for source_run_id, holder, lapsed_for in lapsed:
        if holder and holder != REAPER and holder not in live:
            found.append(Stalled(source_run_id, f"worker {holder} is gone; its lease lapsed {lapsed_for:.0f}s ago",
                                 interrupted=True))
        elif lapsed_for > stalled_after:
            found.append(Stalled(source_run_id, f"no progress for {lapsed_for:.0f}s; its messages were probably "
                                 "lost", interrupted=True))
    for source_run_id, waited in session.execute(_UNSTARTED, {"after": stalled_after}).all():
        found.append(Stalled(source_run_id, f"not picked up by any worker in {waited:.0f}s", interrupted=False))
    return found


def resume_or_fail(session: Session, stalled: Stalled, limit: int, reserve_seconds: float) -> bool:
    """Record the interruption and reserve the source for a resent chain; True to resend, False if given up.

    The caller commits, then resends. After `limit` resumes the source fails instead, so a source that
    kills every worker it touches cannot loop forever.
    """
    source_run = session.get(SourceRun, stalled.source_run_id, populate_existing=True, with_for_update=True)
    if source_run is None or source_run.status in runs.TERMINAL:
        return False
    resumed = events.count(session, source_run.id, "resumed")
    if stalled.interrupted:
        events.record(session, source_run, "interrupted", stalled.reason, source_run.stage)
    if resumed >= limit:
        runs.fail_source(session, source_run.id, f"stalled: {stalled.reason}; gave up after {limit} resumes",
                         source_run.stage)
        return False
    events.record(session, source_run, "resumed",
                  f"resent by the reaper (resume {resumed + 1} of at most {limit}): {stalled.reason}", source_run.stage)
    if stalled.interrupted:
        leases.acquire(session, source_run.source, source_run.run_id, reserve_seconds, REAPER)
    return True


def note_takeover(session: Session, source_run: SourceRun, previous: str | None, current: str | None,
                  alive: Callable[[list[str]], set[str]]) -> bool:
    """Record that a worker took over a source run whose previous worker is gone; True if it did.

    The reaper is not the only way back after a crash: a chain's next message, still queued when its
    worker died, is picked up by another worker. The history shows that too.
    """
    if previous in (None, current, REAPER) or previous in alive([previous]):
        return False
    events.record(session, source_run, "interrupted", f"worker {previous} is gone", source_run.stage)
    events.record(session, source_run, "resumed", f"taken over by worker {current}", source_run.stage)
    return True
