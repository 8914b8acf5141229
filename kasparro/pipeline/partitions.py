"""Keep market_quotes' monthly partitions: made ahead of the data, DEFAULT's strays moved out, old months dropped.

market_quotes is partitioned by RANGE of observed_at, one partition per calendar month in UTC, named
`market_quotes_YYYY_MM`, plus `market_quotes_default` for a row whose month has none yet (migration 0017).
PostgreSQL refuses to make a month's partition while DEFAULT holds rows of that month, so making it moves
them: they are copied aside, deleted from DEFAULT, and inserted again once the partition exists, all in one
transaction that holds writers off the table meanwhile. Every step takes one transaction-level advisory
lock first, so two callers (beat's daily task, `etl init-db`) run one after the other, and the second finds
the work done.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import text
from sqlalchemy.orm import Session

from kasparro.models import MarketQuote

logger = logging.getLogger(__name__)

PARENT = "market_quotes"
DEFAULT = "market_quotes_default"
_MONTHLY = re.compile(r"market_quotes_(\d{4})_(\d{2})")
# Distinct from the run trigger's key (pipeline/runs.py).
LOCK_KEY = 7_311_017
# Making or dropping a partition locks market_quotes against readers too (ACCESS EXCLUSIVE), and every query
# arriving meanwhile queues behind that lock: behind a long read, give up instead (the task retries; the
# partitions are made months ahead, so a day lost costs nothing).
LOCK_TIMEOUT = "5s"
_COLUMNS = ", ".join(column.name for column in MarketQuote.__table__.columns)

_PARTITIONS = text("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                   " WHERE i.inhparent = 'market_quotes'::regclass")
_STRAY_MONTHS = text(f"SELECT DISTINCT date_trunc('month', observed_at, 'UTC') FROM {DEFAULT}")


@dataclass
class Maintenance:
    """What one pass did: partitions made, rows moved out of DEFAULT into them, partitions dropped."""

    created: list[str] = field(default_factory=list)
    moved: int = 0
    dropped: list[str] = field(default_factory=list)


def month_start(moment: datetime) -> datetime:
    """Return the first instant of `moment`'s calendar month in UTC."""
    utc = moment.astimezone(timezone.utc)
    return datetime(utc.year, utc.month, 1, tzinfo=timezone.utc)


def add_months(month: datetime, months: int) -> datetime:
    """Return the first instant of the month `months` after (or before) the month starting at `month`."""
    index = month.year * 12 + month.month - 1 + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=timezone.utc)


def partition_name(month: datetime) -> str:
    """Name the partition holding the month that starts at `month`."""
    return f"{PARENT}_{month:%Y_%m}"


def partition_month(name: str) -> datetime | None:
    """Return the month a monthly partition holds, or None for any other name (DEFAULT, other tables)."""
    found = _MONTHLY.fullmatch(name)
    return datetime(int(found[1]), int(found[2]), 1, tzinfo=timezone.utc) if found else None


def is_partition(name: str) -> bool:
    """Whether `name` is one of market_quotes' partitions, which the models do not describe (migrations)."""
    return name == DEFAULT or partition_month(name) is not None


def ensure_partitions(session: Session, months_ahead: int, now: datetime | None = None,
                      history: bool = False) -> Maintenance:
    """Make the partitions of this month, the next `months_ahead` and every month from this one on that DEFAULT
    holds rows of; with `history`, of the earlier months DEFAULT holds rows of too.

    Earlier months stay in DEFAULT by default: measured, a file spanning 124 months loaded 3x slower into monthly
    partitions than into DEFAULT, and /data/latest took 182 ms instead of 11 (README, "Past one database").
    """
    _lock(session)
    done = Maintenance()
    existing = _months(session)
    this_month = month_start(now or datetime.now(timezone.utc))
    stray = {month_start(m) for m in session.execute(_STRAY_MONTHS).scalars()}
    if not history:
        stray = {month for month in stray if month >= this_month}
    for month in sorted(({add_months(this_month, n) for n in range(months_ahead + 1)} | stray) - existing):
        if month in stray:
            done.moved += _move_out_of_default(session, month)
        else:
            _create(session, month)
        done.created.append(partition_name(month))
    if done.created:
        logger.info("made partitions %s of market_quotes, moving %d rows out of %s", ", ".join(done.created),
                    done.moved, DEFAULT)
    return done


def drop_expired(session: Session, retention_months: int, now: datetime | None = None) -> list[str]:
    """Detach and drop the monthly partitions wholly older than `retention_months` months (0 keeps all)."""
    if retention_months <= 0:
        return []
    _lock(session)
    # A month is wholly older than N months when it ended before the month N months back began.
    keep_from = add_months(month_start(now or datetime.now(timezone.utc)), -retention_months)
    dropped = []
    for month in sorted(m for m in _months(session) if m < keep_from):
        name = partition_name(month)
        session.execute(text(f"ALTER TABLE {PARENT} DETACH PARTITION {name}"))
        session.execute(text(f"DROP TABLE {name}"))
        logger.info("dropped partition %s: quotes observed from %s to %s, older than QUOTES_RETENTION_MONTHS=%d",
                    name, month.date(), add_months(month, 1).date(), retention_months)
        dropped.append(name)
    return dropped


def maintain(session: Session, months_ahead: int, retention_months: int, now: datetime | None = None,
             history: bool = False) -> Maintenance:
    """Make the partitions ahead and for DEFAULT's strays, then drop the expired ones; the caller commits."""
    done = ensure_partitions(session, months_ahead, now, history)
    done.dropped = drop_expired(session, retention_months, now)
    return done


def _lock(session: Session) -> None:
    session.execute(text("SELECT pg_advisory_xact_lock(:k), set_config('lock_timeout', :t, true)"),
                    {"k": LOCK_KEY, "t": LOCK_TIMEOUT})


def _months(session: Session) -> set[datetime]:
    return {m for name in session.execute(_PARTITIONS).scalars() if (m := partition_month(name)) is not None}


def _bounds(month: datetime) -> str:
    # Built from datetimes, never from input: ISO text with its +00:00 offset is an exact bound.
    return f"FROM ('{month.isoformat()}') TO ('{add_months(month, 1).isoformat()}')"


def _create(session: Session, month: datetime) -> None:
    session.execute(text(f"CREATE TABLE IF NOT EXISTS {partition_name(month)} PARTITION OF {PARENT}"
                         f" FOR VALUES {_bounds(month)}"))


def _move_out_of_default(session: Session, month: datetime) -> int:
    """Make `month`'s partition with the rows DEFAULT holds of it moved in (ids and all); return how many."""
    # Writers wait until commit (readers do not): a row of this month written into DEFAULT after the copy
    # would make the CREATE fail, or be left behind.
    session.execute(text(f"LOCK TABLE {PARENT} IN SHARE ROW EXCLUSIVE MODE"))
    span = {"start": month, "end": add_months(month, 1)}
    within = "observed_at >= :start AND observed_at < :end"
    session.execute(text(f"CREATE TEMP TABLE partition_move ON COMMIT DROP AS SELECT {_COLUMNS} FROM {DEFAULT}"
                         f" WHERE {within}"), span)
    session.execute(text(f"DELETE FROM {DEFAULT} WHERE {within}"), span)
    _create(session, month)
    moved = session.execute(text(f"INSERT INTO {PARENT} ({_COLUMNS}) SELECT {_COLUMNS} FROM partition_move")).rowcount
    session.execute(text("DROP TABLE partition_move"))
    return moved


# The BRIN index on run_id is partitioned: brin_summarize_new_values takes each partition's own index, which
# pg_inherits lists under the parent's. Autosummarize is no substitute: it asks autovacuum to summarize a
# range only once inserts move on to the next one, and only when autovacuum gets to it, so a run's last
# ranges would stay unsummarized and be read whole by every later lookup of a run.
_SUMMARIZE = text("SELECT coalesce(sum(brin_summarize_new_values(inhrelid::regclass)), 0) FROM pg_inherits"
                  " WHERE inhparent = 'ix_market_quotes_run_id_brin'::regclass")


def summarize_new_ranges(session: Session) -> int:
    """Summarize the block ranges of market_quotes written since the last time; return how many, and commit.

    Called once a run's part is final (stages.load), outside its transaction: the next run's quality rules
    then read only their own new ranges whole, and the run that wrote them is not kept waiting for it
    (on 1M rows it took 0.36 s, which the next small run paid when its rules did it). A failure costs only
    speed: unsummarized ranges are still searched, and the next call summarizes them.
    """
    try:
        summarized = int(session.execute(_SUMMARIZE).scalar_one())
        session.commit()
        return summarized
    except Exception:  # noqa: BLE001 - the run is final already; this only speeds up later lookups
        session.rollback()
        logger.warning("could not summarize the new ranges of market_quotes", exc_info=True)
        return 0
