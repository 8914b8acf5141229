"""Let one run at a time work on a source, with leases that expire if their holder dies."""
from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

_ACQUIRE = text(
    """
    INSERT INTO source_leases (source, run_id, expires_at)
    VALUES (:source, :run_id, now() + make_interval(secs => :seconds))
    ON CONFLICT (source) DO UPDATE
        SET run_id = EXCLUDED.run_id, expires_at = EXCLUDED.expires_at
        WHERE source_leases.run_id = EXCLUDED.run_id OR source_leases.expires_at < now()
    RETURNING run_id
    """
)


def acquire(session: Session, source: str, run_id: int, seconds: int) -> bool:
    """Take or renew the lease on `source` for `run_id`; False while another live run holds it."""
    return session.execute(_ACQUIRE, {"source": source, "run_id": run_id, "seconds": seconds}).first() is not None


def holder(session: Session, source: str) -> int | None:
    """Return the run holding a live lease on `source`, if any."""
    return session.execute(
        text("SELECT run_id FROM source_leases WHERE source = :s AND expires_at >= now()"), {"s": source}
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
