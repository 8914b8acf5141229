"""market_quotes by month: loads across a month's edge, DEFAULT's rows moved to their month, old months dropped."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from kasparro.config import PARTITIONS_SCHEDULE_ENTRY
from kasparro.db import db
from kasparro.pipeline import partitions
from kasparro.pipeline.targets import quotes
from kasparro.tasks import maintain_partitions
from tests.api import factories as f

BEFORE_EDGE = datetime(2024, 1, 31, 23, 30, tzinfo=timezone.utc)
AFTER_EDGE = datetime(2024, 2, 1, 0, 30, tzinfo=timezone.utc)
# A month no partition is made for: ensure_partitions makes only this month and a few after it.
FAR_MONTH = datetime(2031, 5, 17, 12, tzinfo=timezone.utc)


@pytest.fixture
def session(app: Flask) -> Iterator[Session]:
    with app.app_context():
        yield db.session
        db.session.rollback()


def stage(session: Session, prices: dict[datetime, float], run_sources: tuple[str, ...] = ("csv",)) -> int:
    """Stage one quote of bitcoin per time in a new run's batch, read from a raw chunk's lines; return the batch id."""
    coin = session.execute(text("SELECT id FROM assets WHERE slug = 'bitcoin'")).scalar() or f.asset("bitcoin").id
    source_run = f.run(sources=run_sources).source_runs[0]
    batch = f.batch(source_run, state="transformed")
    for line, (at, price) in enumerate(prices.items(), start=1):
        session.execute(text("INSERT INTO quote_stage (raw_chunk_id, raw_line, batch_id, run_id, source, asset_id,"
                             " observed_at, price_usd) VALUES (1, :line, :batch, :run, 'csv', :asset, :at, :price)"),
                        {"line": line, "batch": batch.id, "run": source_run.run_id, "asset": coin, "at": at,
                         "price": price})
    return batch.id


def homes(session: Session) -> dict[datetime, str]:
    """Each quote's observed_at and the partition holding it."""
    rows = session.execute(text("SELECT observed_at, tableoid::regclass::text FROM market_quotes"))
    return {at: home for at, home in rows}


def test_quotes_either_side_of_a_months_edge_land_in_two_partitions_and_upsert_with_exact_counts(
        session: Session) -> None:
    partitions.ensure_partitions(session, 1, now=datetime(2024, 1, 15, tzinfo=timezone.utc))

    first = quotes.load(session, stage(session, {BEFORE_EDGE: 100, AFTER_EDGE: 200}))
    second = quotes.load(session, stage(session, {BEFORE_EDGE: 100, AFTER_EDGE: 201}))  # a later run, one changed
    again = quotes.load(session, stage(session, {BEFORE_EDGE: 100, AFTER_EDGE: 201}))

    assert (first, second, again) == ((2, 0, 2), (0, 1, 2), (0, 0, 2))
    assert homes(session) == {BEFORE_EDGE: "market_quotes_2024_01", AFTER_EDGE: "market_quotes_2024_02"}
    prices = session.execute(text("SELECT price_usd FROM market_quotes ORDER BY observed_at")).scalars().all()
    assert prices == [Decimal(100), Decimal(201)]


def test_a_load_that_waited_for_another_loads_commit_counts_the_rows_it_found_as_updates(app: Flask) -> None:
    with app.app_context():
        partitions.ensure_partitions(db.session, 1, now=datetime(2024, 1, 15, tzinfo=timezone.utc))
        batches = [stage(db.session, {BEFORE_EDGE: 100 + n, AFTER_EDGE: 200 + n}) for n in range(2)]
        db.session.commit()
    counts: dict[str, tuple[int, int, int]] = {}
    with Session(_engine(app)) as one, Session(_engine(app)) as two:
        counts["first"] = quotes.load(one, batches[0])  # holds its new keys until it commits

        def second() -> None:
            counts["second"] = quotes.load(two, batches[1])
            two.commit()

        waiter = threading.Thread(target=second)
        waiter.start()
        waiter.join(timeout=2)
        assert waiter.is_alive()  # waiting on the first load's keys
        one.commit()
        waiter.join(timeout=30)

    assert counts == {"first": (2, 0, 2), "second": (0, 2, 2)}


def _engine(app: Flask) -> Engine:
    """The app's engine, for sessions of a test's own outside the app context."""
    with app.app_context():
        return db.engine


def test_a_quote_of_a_month_without_a_partition_waits_in_default_and_moves_to_its_month_once_made(
        session: Session) -> None:
    coin = f.asset("bitcoin")
    batch = f.batch(f.run().source_runs[0])
    stray = f.quote(coin, batch, FAR_MONTH, 123)
    session.commit()
    assert homes(session) == {FAR_MONTH: partitions.DEFAULT}

    done = partitions.ensure_partitions(session, 0)
    session.commit()

    assert "market_quotes_2031_05" in done.created and done.moved == 1
    assert homes(session) == {FAR_MONTH: "market_quotes_2031_05"}
    row = session.execute(text("SELECT id, price_usd, raw_record_id, run_id FROM market_quotes")).one()
    assert tuple(row) == (stray.id, Decimal(123), stray.raw_record_id, stray.run_id)
    assert partitions.ensure_partitions(session, 0).created == []  # nothing left to do


def test_a_quote_of_an_earlier_month_stays_in_default_unless_history_is_asked_for(session: Session) -> None:
    coin = f.asset("bitcoin")
    batch = f.batch(f.run().source_runs[0])
    past = datetime(2019, 3, 5, tzinfo=timezone.utc)
    f.quote(coin, batch, past, 1)
    session.commit()
    now = datetime(2024, 1, 15, tzinfo=timezone.utc)

    kept = partitions.ensure_partitions(session, 0, now=now)
    session.commit()
    assert "market_quotes_2019_03" not in kept.created and kept.moved == 0
    assert homes(session) == {past: partitions.DEFAULT}

    moved = partitions.ensure_partitions(session, 0, now=now, history=True)
    session.commit()
    assert moved.created == ["market_quotes_2019_03"] and moved.moved == 1
    assert homes(session) == {past: "market_quotes_2019_03"}


def test_two_passes_at_once_make_each_partition_once_and_lose_no_row(app: Flask) -> None:
    with app.app_context():
        coin = f.asset("bitcoin")
        f.quote(coin, f.batch(f.run().source_runs[0]), FAR_MONTH.replace(year=2032), 1)
        db.session.commit()
    made: list[list[str]] = []
    errors: list[BaseException] = []

    def one_pass() -> None:
        try:
            with Session(_engine(app)) as own:
                made.append(partitions.ensure_partitions(own, 0).created)
                own.commit()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    passes = [threading.Thread(target=one_pass) for _ in range(2)]
    for each in passes:
        each.start()
    for each in passes:
        each.join(timeout=60)

    assert errors == []
    assert sorted(made, key=len) == [[], ["market_quotes_2032_05"]]
    with app.app_context():
        assert homes(db.session) == {FAR_MONTH.replace(year=2032): "market_quotes_2032_05"}


def test_retention_drops_only_the_months_wholly_older_than_it_and_says_which(
        session: Session, caplog: pytest.LogCaptureFixture) -> None:
    partitions.ensure_partitions(session, 3, now=datetime(2019, 1, 15, tzinfo=timezone.utc))
    coin = f.asset("bitcoin")
    batch = f.batch(f.run().source_runs[0])
    days = [datetime(2019, month, 5, tzinfo=timezone.utc) for month in (1, 2, 3, 4)]
    for day in days:
        f.quote(coin, batch, day, 1)
    session.commit()
    now = datetime(2019, 4, 10, tzinfo=timezone.utc)

    assert partitions.drop_expired(session, 0, now) == []  # 0 keeps every month
    with caplog.at_level(logging.INFO, logger="kasparro.pipeline.partitions"):
        dropped = partitions.drop_expired(session, 2, now)
    session.commit()

    # February 5 is older than two months, but February is not wholly older: it stays.
    assert dropped == ["market_quotes_2019_01"]
    assert sorted(homes(session)) == days[1:]
    assert "dropped partition market_quotes_2019_01: quotes observed from 2019-01-01 to 2019-02-01" in caplog.text
    assert session.execute(text("SELECT to_regclass('market_quotes_2019_01')")).scalar() is None


def test_beat_runs_the_upkeep_daily_and_etl_partitions_runs_it_now_with_the_settings(app: Flask) -> None:
    entry = app.extensions["celery"].conf.beat_schedule[PARTITIONS_SCHEDULE_ENTRY]
    with app.app_context():
        f.quote(f.asset("bitcoin"), f.batch(f.run().source_runs[0]), FAR_MONTH.replace(year=2033), 1)
        db.session.commit()
    app.config["QUOTES_PARTITION_MONTHS_AHEAD"] = 4
    try:
        output = app.test_cli_runner().invoke(args=["etl", "partitions"]).output
    finally:
        app.config["QUOTES_PARTITION_MONTHS_AHEAD"] = 3

    assert entry["task"] == maintain_partitions.name and entry["schedule"].total_seconds() == 24 * 3600
    assert "moved 1 row(s) out of the default one" in output and "made market_quotes_2033_05" in output
    with app.app_context():
        fourth = partitions.partition_name(partitions.add_months(partitions.month_start(datetime.now(timezone.utc)), 4))
        assert db.session.execute(text("SELECT to_regclass(:name)"), {"name": fourth}).scalar() is not None


def test_behind_a_long_read_making_a_partition_gives_up_after_the_lock_timeout_instead_of_stalling_reads(
        app: Flask) -> None:
    engine = _engine(app)
    with engine.connect() as reader:
        reader.execute(text("SELECT count(*) FROM market_quotes"))  # its transaction stays open, holding the table
        started = time.monotonic()
        with Session(engine) as own, pytest.raises(OperationalError, match="lock timeout"):
            partitions.ensure_partitions(own, 0, now=datetime(2035, 3, 1, tzinfo=timezone.utc))
        waited = time.monotonic() - started

    assert 4 < waited < 30
