"""Let one run at a time work on a source, with short leases that a live holder keeps renewing.

A lease names its run and its holder (the worker process working under it). A
holder renews it at every page and, from a background thread, every third of
its length, so only a dead or frozen holder lets it lapse; the reaper then
resumes the source elsewhere.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from kasparro.errors import SourceBusy, SourceRunClosed
from kasparro.pipeline import durability

logger = logging.getLogger(__name__)

# Only a run whose part for this source is still open may take or renew the lease, so a
# stage still working after its source run closed (failed elsewhere) cannot hold it up.
# FOR SHARE waits for a transaction closing the source run (it updates the row and deletes the
# lease) and then reads the row as it committed; without it, an acquire that began before that
# commit would see the run still open and write the lease back for a closed run.
_ACQUIRE = text(
    """
    INSERT INTO source_leases (source, run_id, holder, expires_at)
    SELECT :source, :run_id, :holder, now() + make_interval(secs => :seconds)
    WHERE EXISTS (SELECT 1 FROM run_sources WHERE run_id = :run_id AND source = :source
                  AND status IN ('queued', 'running') FOR SHARE)
    ON CONFLICT (source) DO UPDATE
        SET run_id = EXCLUDED.run_id, holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
        WHERE source_leases.run_id = EXCLUDED.run_id OR source_leases.expires_at < now()
    RETURNING run_id
    """
)


def acquire(session: Session, source: str, run_id: int, seconds: float, holder: str | None = None) -> bool:
    """Take or renew the lease on `source` for `run_id`; False while another live run holds it."""
    params = {"source": source, "run_id": run_id, "seconds": seconds, "holder": holder}
    return session.execute(_ACQUIRE, params).first() is not None


def holder(session: Session, source: str) -> int | None:
    """Return the run holding a live lease on `source`, if any."""
    return session.execute(
        text("SELECT run_id FROM source_leases WHERE source = :s AND expires_at >= now()"), {"s": source}
    ).scalar()


def held_by(session: Session, source: str, run_id: int) -> str | None:
    """Return the worker named on `run_id`'s lease on `source`, live or lapsed (None if no such lease)."""
    return session.execute(
        text("SELECT holder FROM source_leases WHERE source = :s AND run_id = :r"), {"s": source, "r": run_id}
    ).scalar()


def seconds_left(session: Session, source: str) -> float:
    """Return how long the live lease on `source` has left (0 if none)."""
    left = session.execute(
        text("SELECT extract(epoch FROM expires_at - now()) FROM source_leases WHERE source = :s"), {"s": source}
    ).scalar()
    return max(float(left or 0), 0.0)


def release(session: Session, source: str, run_id: int) -> None:
    """Give the lease back, if `run_id` still holds it."""
    session.execute(
        text("DELETE FROM source_leases WHERE source = :s AND run_id = :r"), {"s": source, "r": run_id}
    )


@dataclass(frozen=True)
class Terms:
    """How long a lease lasts and who holds it: what every stage needs to take or renew one."""

    seconds: float
    holder: str | None = None

    def take(self, session: Session, source: str, run_id: int) -> None:
        """Acquire or renew the lease and commit at once; raise SourceBusy naming the run that has it,
        or SourceRunClosed if this run's part for the source has ended meanwhile."""
        # Committed on its own: a lease row held through a stage's work would serialise the stages. The
        # commit need not wait for the disk: a crash that loses it leaves the lease as last renewed, a
        # few seconds older, and its holder renews it again well before it lapses.
        durability.defer_flush(session)
        taken = acquire(session, source, run_id, self.seconds, self.holder)
        session.commit()
        if taken:
            return
        other = holder(session, source)
        if other is None or other == run_id:
            raise SourceRunClosed(f"run {run_id} no longer works on this source", source=source)
        raise SourceBusy(f"run {other} is working on this source", source=source,
                         retry_in=seconds_left(session, source))


@contextmanager
def hold(engine: Engine, source: str, run_id: int, terms: Terms) -> Iterator[None]:
    """Keep renewing a lease already taken while the block runs, from a thread with its own connection."""
    stop = threading.Event()
    thread = threading.Thread(target=_renew, args=(engine, source, run_id, terms.seconds, terms.holder, stop),
                              name=f"lease-{source}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _renew(engine: Engine, source: str, run_id: int, seconds: float, holder_id: str | None,
           stop: threading.Event) -> None:
    # A third of the lease between renewals: two may fail before the lease lapses.
    while not stop.wait(seconds / 3):
        try:
            with Session(engine) as session, session.begin():
                if not acquire(session, source, run_id, seconds, holder_id):
                    logger.warning("lease on %s for run %s was lost; the stage will stand down", source, run_id)
                    return
        except Exception as exc:  # noqa: BLE001 - a failed renewal is retried; the lease has slack for it
            logger.warning("could not renew the lease on %s: %s", source, exc)
