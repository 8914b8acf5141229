"""Each data-quality rule on real tables: rows inserted into the migrated schema, the rule run, findings read back."""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from kasparro.db import db
from kasparro.models import Anomaly, AssetAlias, RunEvent, SourceRun
from kasparro.pipeline import quality
from kasparro.pipeline.quality import history, prices
from kasparro.pipeline.outage import database_unreachable
from tests.api import factories as f
from tests.pipeline.helpers import HEADER, csv_spec, declare
from tests.pipeline.inprocess import run_in_process
from tests.pipeline.test_races import wait_until_waiting_on

LIMITS = quality.Thresholds()
DAY = timedelta(days=1)


@pytest.fixture
def session(app: Flask) -> Iterator[Session]:
    with app.app_context():
        yield db.session
        db.session.rollback()


def stored(session: Session, rule: str | None = None) -> list[Anomaly]:
    query = select(Anomaly).order_by(Anomaly.id)
    return list(session.execute(query if rule is None else query.where(Anomaly.rule == rule)).scalars())


def history_of(session: Session, extracted: list[int], seconds: list[float]) -> SourceRun:
    """Runs of source `csv`, oldest first; returns the last one's source run."""
    runs = [f.run(sources=("csv",), extracted=rows, seconds=took) for rows, took in zip(extracted, seconds)]
    return runs[-1].source_runs[0]


@pytest.mark.parametrize(("rows", "past", "severity"), [
    (10, [100, 90, 120, 100], "critical"),
    (500, [100, 90, 120], "warning"),
    (30, [100, 90, 120], None),       # a quarter of the median is the edge, not past it
    (10, [100, 90], None),            # too little history
    (10, [0, 0, 0, 100], None),       # an incremental source that usually reads nothing: no baseline
])
def test_volume_compares_rows_read_with_the_median_of_recent_runs(rows: int, past: list[int],
                                                                  severity: str | None) -> None:
    finding = history.volume("csv", rows, past, LIMITS)

    assert (finding.severity if finding else None) == severity
    if finding:
        assert (finding.rule, finding.observed, finding.expected) == ("volume", rows, 100)


@pytest.mark.parametrize(("seconds", "past", "fires"), [
    (400, [100, 100, 120], True),
    (250, [100, 100, 120], False),
    (50, [5, 5, 5], False),           # 10x slower, but under the 60 s floor
    (400, [100, 100], False),
])
def test_slow_run_needs_k_times_the_median_and_the_absolute_floor(seconds: float, past: list[float],
                                                                  fires: bool) -> None:
    assert (history.slow_run("csv", seconds, past, LIMITS) is not None) == fires


def test_volume_and_slow_run_read_the_sources_successful_history(session: Session) -> None:
    f.run(sources=("csv",), status="failed", extracted=5, seconds=1)  # failed runs are no baseline
    last = history_of(session, [100, 110, 90, 100, 12], [10, 12, 11, 10, 200])

    found = quality.evaluate(session, last, LIMITS)

    assert sorted(x.rule for x in found) == ["slow_run", "volume"]
    volume, = stored(session, "volume")
    assert (volume.source, volume.run_source_id, float(volume.observed), float(volume.expected)) == \
        ("csv", last.id, 12, 100)
    slow, = stored(session, "slow_run")
    assert (float(slow.observed), float(slow.expected)) == (200, 10.5)


def test_price_jump_flags_only_this_runs_quotes_that_moved_past_the_threshold(session: Session) -> None:
    coin = f.asset("bitcoin")
    earlier = f.run(sources=("csv",)).source_runs[0]
    f.quote(coin, f.batch(earlier), f.T0, 100)
    f.quote(coin, f.batch(earlier, seq=1), f.T0 + DAY, 300)  # an old jump: not this run's
    this = f.run(sources=("csv",), inserted=2).source_runs[0]
    batch = f.batch(this)
    f.quote(coin, batch, f.T0 + 2 * DAY, 320)   # +7% on the previous (earlier run's) observation
    f.quote(coin, batch, f.T0 + 3 * DAY, 100)   # -69%

    found = quality.evaluate(session, this, LIMITS)

    jump, = stored(session, "price_jump")
    assert [x.rule for x in found] == ["price_jump"]
    assert (jump.asset_id, float(jump.observed), float(jump.expected)) == (coin.id, 100, 320)
    assert "bitcoin moved 69%" in jump.detail


def test_the_price_rules_look_at_the_quotes_the_runs_last_batches_wrote_an_updated_old_row_among_them(
        session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prices, "MAX_ROWS", 1)
    coin = f.asset("bitcoin")
    earlier = f.batch(f.run(sources=("csv",)).source_runs[0])
    f.quote(coin, earlier, f.T0 + 3 * DAY, 100)
    updated = f.quote(coin, earlier, f.T0 + 4 * DAY, 100)
    this = f.run(sources=("csv",), inserted=3, updated=1).source_runs[0]
    first, last = f.batch(this), f.batch(this, seq=1)
    first.written, last.written = 3, 1
    for day in (5, 6, 7):
        f.quote(coin, first, f.T0 + day * DAY, 500)
    # The last batch rewrites an earlier run's quote: +400% on the day before. Its id is the oldest of the run's.
    updated.run_id, updated.batch_id, updated.price_usd = this.run_id, last.id, 500
    session.flush()

    found = quality.evaluate(session, this, LIMITS)

    assert [(x.rule, float(x.observed), float(x.expected)) for x in found] == [("price_jump", 500, 100)]


def test_the_price_rules_sort_only_the_quotes_of_the_runs_last_batches(
        session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prices, "MAX_ROWS", 150)
    coin = f.asset("bitcoin")
    this = f.run(sources=("csv",), inserted=1000).source_runs[0]
    for seq in range(10):
        batch = f.batch(this, seq=seq)
        batch.written = 100
        session.execute(text(
            "INSERT INTO market_quotes (asset_id, source, observed_at, price_usd, raw_chunk_id, raw_line, run_id,"
            " batch_id) SELECT :asset, 'csv', :t0 + n * interval '1 hour', 100, 1, n, :run, :batch"
            " FROM generate_series(:seq * 100, :seq * 100 + 99) AS n"),
            {"asset": coin.id, "t0": f.T0, "run": this.run_id, "batch": batch.id, "seq": seq})
    statements: list[tuple[str, Any]] = []

    def note(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    event.listen(session.get_bind(), "before_cursor_execute", note)
    try:
        quality.evaluate(session, this, LIMITS)
    finally:
        event.remove(session.get_bind(), "before_cursor_execute", note)
    rules = [(s, p) for s, p in statements if "ORDER BY batch_id DESC" in s]

    assert len(rules) == 2
    for statement, parameters in rules:
        plan = session.connection().exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement,
                                                    parameters).scalar_one()[0]["Plan"]
        # Two batches hold the newest 150: 200 quotes sorted, never the run's 1,000.
        assert [rows for rows in _sorted_rows(plan)] == [200], statement


def _sorted_rows(plan: dict[str, Any]) -> list[int]:
    """The rows each Sort step of the plan on batch_id took in."""
    here = [sum(child["Actual Rows"] * child["Actual Loops"] for child in plan.get("Plans", []))] \
        if plan["Node Type"] == "Sort" and "batch_id" in " ".join(plan.get("Sort Key", [])) else []
    return here + [rows for child in plan.get("Plans", []) for rows in _sorted_rows(child)]


def test_source_disagreement_flags_a_price_far_from_the_cross_source_median(session: Session) -> None:
    coin = f.asset("bitcoin")
    run = f.run(sources=("a", "b", "c"), inserted=1)
    parts = {sr.source: sr for sr in run.source_runs}
    for source, price, hours in (("a", 100, 1), ("b", 103, 5), ("c", 150, 9)):
        f.quote(coin, f.batch(parts[source]), f.T0 + timedelta(hours=hours), price)
    f.quote(coin, f.batch(parts["c"], seq=1), f.T0 + DAY, 100)  # next day: alone, nothing to compare

    assert quality.evaluate(session, parts["a"], LIMITS) == []
    found = quality.evaluate(session, parts["c"], LIMITS)

    assert [(x.rule, x.source, x.observed, x.expected) for x in found] == [("source_disagreement", "c", 150, 103)]
    assert "of 3 sources" in stored(session)[0].detail


def test_an_hour_bucket_keeps_quotes_of_different_hours_apart(session: Session) -> None:
    coin = f.asset("bitcoin")
    run = f.run(sources=("a", "b"), inserted=1)
    for part, price, hours in zip(run.source_runs, (100, 150), (1, 5)):
        f.quote(coin, f.batch(part), f.T0 + timedelta(hours=hours), price)

    hourly = quality.Thresholds(disagreement_bucket="hour")

    assert quality.evaluate(session, run.source_runs[1], hourly) == []
    assert [x.rule for x in quality.evaluate(session, run.source_runs[1], LIMITS)] == ["source_disagreement"]


def listing_run(session: Session, kind: str, listed: list[str]) -> SourceRun:
    run = f.run(sources=("paprika",))
    run.config = {"paprika": {"kind": kind}}
    part = run.source_runs[0]
    f.batch(part, seq=0).cursor_after = {"seen": {"ignored-early-page": "x"}}
    f.batch(part, seq=1).cursor_after = {"seen": {coin: "2024-01-01T00:00:00Z" for coin in listed}}
    session.flush()
    return part


def aliases(session: Session) -> dict[str, tuple[bool, bool]]:
    rows = session.execute(select(AssetAlias).where(AssetAlias.source == "paprika")).scalars()
    return {a.source_asset_id: (a.active, a.inactive_since is not None) for a in rows}


def test_an_asset_missing_from_a_full_listing_goes_inactive_and_comes_back(session: Session) -> None:
    btc, eth = f.asset("bitcoin", paprika="btc-bitcoin"), f.asset("ethereum", paprika="eth-ethereum")

    gone = quality.evaluate(session, listing_run(session, "coinpaprika", ["btc-bitcoin"]), LIMITS)
    assert [(x.rule, x.asset_id) for x in gone] == [("asset_disappeared", eth.id)]
    assert aliases(session) == {"btc-bitcoin": (True, False), "eth-ethereum": (False, True)}

    again = quality.evaluate(session, listing_run(session, "coinpaprika", ["btc-bitcoin"]), LIMITS)
    assert again == []  # already inactive: no second finding

    back = quality.evaluate(session, listing_run(session, "coinpaprika", ["btc-bitcoin", "eth-ethereum"]), LIMITS)
    assert [(x.rule, x.asset_id) for x in back] == [("asset_reappeared", eth.id)]
    assert "missing since" in back[0].detail and "unknown" not in back[0].detail
    assert aliases(session) == {"btc-bitcoin": (True, False), "eth-ethereum": (True, False)}
    assert [a.rule for a in stored(session)] == ["asset_disappeared", "asset_reappeared"]
    assert btc.id != eth.id


def test_a_source_that_does_not_read_a_full_listing_never_marks_assets_inactive(session: Session) -> None:
    f.asset("ethereum", paprika="eth-ethereum")

    assert quality.evaluate(session, listing_run(session, "csv", ["btc-bitcoin"]), LIMITS) == []
    assert aliases(session) == {"eth-ethereum": (True, False)}


def test_a_failing_rule_records_nothing_and_the_others_still_run(session: Session) -> None:
    coin = f.asset("bitcoin")
    last = history_of(session, [100, 100, 100, 1], [1, 1, 1, 1])
    f.quote(coin, f.batch(last), f.T0, 100)
    broken = quality.Thresholds(disagreement_bucket="fortnight")  # date_trunc refuses it

    found = quality.check_source_run(session, last, broken)
    session.commit()

    assert [x.rule for x in found] == ["volume"]
    assert [a.rule for a in stored(session)] == ["volume"]


def test_a_rule_cut_off_by_the_statement_timeout_is_a_warning_and_a_run_event_and_the_run_stands(
        session: Session, caplog: pytest.LogCaptureFixture) -> None:
    coin = f.asset("bitcoin")
    last = history_of(session, [100, 100, 100, 1], [1, 1, 1, 1])
    f.quote(coin, f.batch(last), f.T0, 100)
    last.inserted = 1
    session.commit()
    # Should the timeout not apply, the wait ends here instead, with another message than the one asserted.
    session.execute(text("SET LOCAL lock_timeout = '20s'"))

    with db.engine.connect() as other, other.begin():
        # Another session holds market_quotes: the price rules wait to read it until the timeout cancels them.
        other.execute(text("LOCK TABLE market_quotes IN ACCESS EXCLUSIVE MODE"))
        with caplog.at_level(logging.WARNING, logger="kasparro.pipeline.quality"):
            found = quality.check_source_run(session, last, quality.Thresholds(timeout_seconds=0.5))
        session.commit()

    details = list(session.execute(select(RunEvent.detail).where(RunEvent.run_source_id == last.id,
                                                                 RunEvent.kind == "quality").order_by(RunEvent.id))
                   .scalars())
    assert [x.rule for x in found] == ["volume"]  # the other rules still ran, and their findings were stored
    assert [a.rule for a in stored(session)] == ["volume"]
    assert [d.split(" failed")[0] for d in details] == ["quality rule price_jump", "quality rule source_disagreement"]
    assert all(d.endswith("checked nothing: canceling statement due to statement timeout") for d in details)
    warned = [r.getMessage().split(" failed")[0] for r in caplog.records if r.levelno == logging.WARNING]
    assert [m for m in warned if m.startswith("quality rule")] == ["quality rule price_jump",
                                                                   "quality rule source_disagreement"]
    assert session.get(SourceRun, last.id).status == "success"


def test_a_connection_lost_during_a_rule_is_raised_for_the_stage_to_be_resumed_not_carried_on_in(
        session: Session) -> None:
    # A rule's own failure is a warning (above); a lost connection is not the rule's, and the transaction
    # the rules would carry on in is gone with it: swallowed, the stage's commit failed the run instead.
    coin = f.asset("bitcoin")
    last = history_of(session, [100, 100, 100, 1], [1, 1, 1, 1])
    f.quote(coin, f.batch(last), f.T0, 100)
    last.inserted = 1
    session.commit()
    ours = session.execute(text("SELECT pg_backend_pid()")).scalar_one()

    with db.engine.connect() as other, other.begin():
        other.execute(text("LOCK TABLE market_quotes IN ACCESS EXCLUSIVE MODE"))
        holder = other.execute(text("SELECT pg_backend_pid()")).scalar_one()
        # While a price rule waits on the lock, the server cuts its connection (a failover, an operator).
        cutter = threading.Thread(target=_cut_when_waiting, args=(db.engine, ours, holder))
        cutter.start()
        with pytest.raises(Exception) as caught:
            quality.check_source_run(session, last, quality.Thresholds(timeout_seconds=30))
        cutter.join(timeout=30)
    session.rollback()

    assert database_unreachable(caught.value), caught.value


def _cut_when_waiting(engine: Engine, waiter: int, holder: int) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as cutter:
        wait_until_waiting_on(waiter, holder, engine)
        cutter.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": waiter})


def test_a_run_that_wrote_a_tenth_of_the_quotes_or_more_has_them_analyzed_before_its_rules(session: Session) -> None:
    coin = f.asset("bitcoin")
    this = f.run(sources=("csv",)).source_runs[0]
    batch = f.batch(this)
    # A partitioned parent's own reltuples is not kept up to date by autovacuum; its partitions' add up.
    estimate = "SELECT sum(greatest(c.reltuples, 0)) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid" \
               " WHERE i.inhparent = 'market_quotes'::regclass"
    for day in range(5):
        f.quote(coin, batch, f.T0 + day * DAY, 100)

    this.inserted = 20_000  # as after a large load
    quality.evaluate(session, this, LIMITS)
    analyzed = session.execute(text(estimate)).scalar()
    for day in range(5, 9):
        f.quote(coin, batch, f.T0 + day * DAY, 100)
    this.inserted = 9_999  # under the floor: the statistics stay as they were
    quality.evaluate(session, this, LIMITS)
    kept = session.execute(text(estimate)).scalar()
    this.inserted = 20_000
    quality.evaluate(session, this, LIMITS)

    assert (analyzed, kept, session.execute(text(estimate)).scalar()) == (5, 5, 9)


def test_a_run_is_final_before_its_block_ranges_are_summarized_and_leaves_none_behind(
        app: Flask, sources_file: Path, tmp_path: Path) -> None:
    # Enough rows for whole block ranges of the BRIN index on run_id (32 pages each).
    path = tmp_path / "daily.csv"
    path.write_text(HEADER + "".join(f"{coin},{date(2012, 1, 1) + n * DAY},{100 + n % 7},1,2\n"
                                     for n in range(4000) for coin in ("bitcoin", "ethereum")))
    declare(sources_file, {"daily": csv_spec(path, batch_size=20_000)})
    other = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])  # what anyone else sees meanwhile
    seen_at_summarize: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "brin_summarize_new_values" in statement:
            with other.connect() as reader:
                seen_at_summarize.append(reader.execute(text("SELECT status FROM run_sources")).scalar_one())

    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", note)
    try:
        source_run = run_in_process(app, "daily", batch_size=20_000)
    finally:
        with app.app_context():
            event.remove(db.engine, "before_cursor_execute", note)
        other.dispose()

    assert (source_run.status, source_run.inserted) == ("success", 8000)
    assert seen_at_summarize == ["success"]  # summarized once, after the close was committed
    with app.app_context():  # nothing left for the next run's rules to read whole
        assert db.session.execute(text("SELECT sum(brin_summarize_new_values(inhrelid::regclass)) FROM pg_inherits"
                                       " WHERE inhparent = 'ix_market_quotes_run_id_brin'::regclass")).scalar_one() == 0


def test_each_loaded_batch_records_the_quotes_it_wrote(app: Flask, sources_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "daily.csv"
    path.write_text(HEADER + "".join(f"{coin},{date(2012, 1, 1) + n * DAY},100,1,2\n"
                                     for n in range(150) for coin in ("bitcoin", "ethereum")))
    declare(sources_file, {"daily": csv_spec(path, batch_size=100)})

    source_run = run_in_process(app, "daily", batch_size=100)

    with app.app_context():
        written = db.session.execute(text("SELECT written FROM raw_batches WHERE run_source_id = :id ORDER BY id"),
                                     {"id": source_run.id}).scalars().all()
    assert (source_run.status, source_run.inserted) == ("success", 300)
    assert written == [100, 100, 100]


def test_the_price_rules_look_at_nothing_for_a_run_that_wrote_no_quotes(session: Session) -> None:
    coin = f.asset("bitcoin")
    this = f.run(sources=("csv",)).source_runs[0]  # read nothing new: inserted and updated are 0
    batch = f.batch(this)
    f.quote(coin, batch, f.T0, 100)
    f.quote(coin, batch, f.T0 + DAY, 500)  # would be a jump, were it this run's writing
    statements: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(session.get_bind(), "before_cursor_execute", note)
    try:
        found = quality.evaluate(session, this, LIMITS)
    finally:
        event.remove(session.get_bind(), "before_cursor_execute", note)

    assert found == []
    assert not [s for s in statements if "market_quotes" in s]  # no price rule ran
