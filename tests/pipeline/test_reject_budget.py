"""The reject budget: a source rejecting most of what it reads is misconfigured; it stops, and says why.

Through a real worker: a file read with the wrong date format fails after its first batch past
`reject_sample`, with the count, the field, a reason and what to check; it writes no more rejects than
that; and a run after the fix loads the whole file, leaving no stale reject behind, as does a replay of the
rejects it kept followed by a run.
"""
from __future__ import annotations

import random
import re
from datetime import date, timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from kasparro.db import db
from kasparro.models import MarketQuote, RawRecord, RejectedRecord
from kasparro.tasks import enqueue_replay
from tests.conftest import wait_for_run
from tests.pipeline.helpers import HEADER, csv_spec, declare, quote_count, run_now

pytestmark = pytest.mark.usefixtures("worker")

COINS = [f"coin-{n}" for n in range(40)]


def daily_file(path: Path, rows: int, bad: set[int] = frozenset()) -> Path:
    """`rows` ISO-dated rows, distinct (coin, day); the rows numbered in `bad` carry a price that is not one."""
    lines = []
    for n in range(rows):
        day = date(2020, 1, 1) + timedelta(days=n // len(COINS))
        price = "n/a" if n in bad else f"{1 + n % 997}.5"
        lines.append(f"{COINS[n % len(COINS)]},{day.isoformat()},{price},1000,100000\n")
    path.write_text(HEADER + "".join(lines))
    return path


def counted(error: str) -> tuple[int, int]:
    """The (rejected, seen) a budget failure names."""
    found = re.search(r"^transform: daily: ([0-9,]+) of the first ([0-9,]+) records rejected", error)
    assert found, error
    return int(found[1].replace(",", "")), int(found[2].replace(",", ""))


def rejects(app: Flask) -> int:
    with app.app_context():
        return db.session.execute(select(func.count()).select_from(RejectedRecord)).scalar_one()


def open_rejects(app: Flask) -> int:
    """Rejects no replay has loaded since (a replayed one is kept, marked `loaded`, as its history)."""
    with app.app_context():
        return db.session.execute(select(func.count()).select_from(RejectedRecord).where(
            RejectedRecord.replay_outcome.is_distinct_from("loaded"))).scalar_one()


def test_a_wrong_date_format_fails_the_source_after_one_batch_with_a_reason_to_act_on(
        app: Flask, sources_file: Path, tmp_path: Path) -> None:
    path = daily_file(tmp_path / "daily.csv", 12_000)
    declare(sources_file, {"daily": csv_spec(path, date_format="%d/%m/%Y", batch_size=1_500)})

    broken = run_now(app)

    (source_run,) = broken.source_runs
    assert (broken.status, source_run.status) == ("failed", "failed")
    rejected, seen = counted(source_run.error)
    assert rejected == seen and "past max_reject_ratio 0.5; 100 % for observed_at: " in source_run.error
    assert re.search(r"observed_at: '2020-[0-9]{2}-[0-9]{2}' does not match '%d/%m/%Y'; ", source_run.error)
    assert "check date_format" in source_run.error
    # The sample (1,000) is passed inside the first batch: that batch is kept, with a second one at most that
    # the worker's other process transformed meanwhile; nothing else of the file is read.
    assert seen in (1_500, 3_000) and seen <= rejects(app) <= 3_000 and quote_count(app) == 0

    declare(sources_file, {"daily": csv_spec(path, batch_size=1_500)})  # the fix: the file's ISO dates
    fixed = run_now(app)

    assert (fixed.status, fixed.source_runs[0].inserted) == ("success", 12_000)
    assert (quote_count(app), rejects(app)) == (12_000, 0)  # the failed run's rejects loaded: none is stale


def test_the_reason_a_failed_source_quotes_is_its_first_rejected_lines(
        app: Flask, sources_file: Path, tmp_path: Path) -> None:
    path = daily_file(tmp_path / "daily.csv", 3_000)
    lines = path.read_text().splitlines(keepends=True)
    lines[100] = "coin-1,a'b,1.5,1000,100000\n"  # its reason would sort first: observed_at: "a'b" does not match
    path.write_text("".join(lines))
    declare(sources_file, {"daily": csv_spec(path, date_format="%d/%m/%Y", batch_size=1_500)})

    broken = run_now(app)

    assert "100 % for observed_at: '2020-01-01' does not match '%d/%m/%Y'; " in broken.source_runs[0].error


def test_a_replay_after_the_fix_loads_the_kept_rejects_and_the_next_run_the_rest_once(
        app: Flask, sources_file: Path, tmp_path: Path) -> None:
    path = daily_file(tmp_path / "daily.csv", 6_000)
    declare(sources_file, {"daily": csv_spec(path, date_format="%d/%m/%Y", batch_size=1_500)})
    broken = run_now(app)
    assert broken.status == "failed"
    kept = rejects(app)
    assert 1_500 <= kept <= 3_000
    declare(sources_file, {"daily": csv_spec(path, batch_size=1_500)})

    with app.app_context():
        replay_id = enqueue_replay("daily").run.id
    replayed = wait_for_run(app, replay_id, 60)
    after_replay = (quote_count(app), open_rejects(app))
    rerun = run_now(app)

    assert replayed.status == "success" and after_replay == (kept, 0)  # each kept reject loaded, none left open
    assert rerun.status == "success"
    # The rest of the file, and nothing twice: 6,000 rows of 6,000 distinct keys (the table's unique key).
    assert (quote_count(app), open_rejects(app)) == (6_000, 0)


@pytest.mark.parametrize("seed", [1, 2])
def test_a_source_under_its_budget_loads_every_valid_row_and_rejects_each_bad_one(
        app: Flask, sources_file: Path, tmp_path: Path, seed: int) -> None:
    rows = 6_000
    bad = set(random.Random(seed).sample(range(rows), rows * random.Random(seed).randint(5, 45) // 100))
    declare(sources_file, {"daily": csv_spec(daily_file(tmp_path / "daily.csv", rows, bad), batch_size=1_000)})

    run = run_now(app)

    (source_run,) = run.source_runs
    assert (run.status, source_run.inserted, source_run.rejected) == ("partial", rows - len(bad), len(bad))
    assert (quote_count(app), rejects(app)) == (rows - len(bad), len(bad))


def test_a_budget_of_one_reads_everything_however_much_is_rejected(app: Flask, sources_file: Path,
                                                                  tmp_path: Path) -> None:
    path = daily_file(tmp_path / "daily.csv", 3_000)
    declare(sources_file, {"daily": csv_spec(path, date_format="%d/%m/%Y", batch_size=1_000, max_reject_ratio=1)})

    run = run_now(app)

    assert (run.status, run.source_runs[0].rejected, rejects(app)) == ("partial", 3_000, 3_000)


def test_a_tighter_budget_and_a_smaller_sample_stop_a_source_sooner(app: Flask, sources_file: Path,
                                                                   tmp_path: Path) -> None:
    rows = 2_000
    path = daily_file(tmp_path / "daily.csv", rows, bad=set(range(0, rows, 5)))  # 20 % bad, spread evenly
    declare(sources_file, {"daily": csv_spec(path, batch_size=100, max_reject_ratio=0.1, reject_sample=300)})

    run = run_now(app)

    (source_run,) = run.source_runs
    assert source_run.status == "failed"
    rejected, seen = counted(source_run.error)
    # Checked per batch of 100, the first time 300 were seen (two processes transform at once: 400 at most).
    assert seen in (300, 400) and rejected == seen // 5 == rejects(app), source_run.error
    assert "100 % for price_usd" in source_run.error and "check the column or field mapped to price_usd" in \
        source_run.error
    with app.app_context():
        loaded = db.session.execute(select(func.count()).select_from(MarketQuote)).scalar_one()
    assert loaded <= seen - rejected


@pytest.mark.parametrize("setting", [{"max_reject_ratio": 1.5}, {"max_reject_ratio": "half"},
                                     {"reject_sample": 0}, {"reject_sample": True}])
def test_a_budget_that_cannot_work_fails_the_source_saying_which_setting(
        app: Flask, sources_file: Path, tmp_path: Path, setting: dict) -> None:
    declare(sources_file, {"daily": csv_spec(daily_file(tmp_path / "daily.csv", 10), **setting)})

    run = run_now(app)

    (source_run,) = run.source_runs
    assert source_run.status == "failed" and next(iter(setting)) in source_run.error
    assert quote_count(app) == 0


def test_a_chunks_rejects_are_kept_line_by_line_in_bulk_and_one_content_is_one_raw_record(
        app: Flask, sources_file: Path, tmp_path: Path) -> None:
    # Rejected lines are written in one statement per chunk. Two lines of one chunk that differ only in their
    # line ending carry one content: one raw record (the first line's) and one reject, as when they were
    # written one by one (one statement may not touch a row twice).
    rows = 2_999
    bad = set(random.Random(7).sample(range(rows), 700))
    path = daily_file(tmp_path / "daily.csv", rows, bad)
    lines = path.read_text().splitlines(keepends=True)
    path.write_bytes("".join(lines).encode() + lines[1 + max(bad)].encode().replace(b"\n", b"\r\n"))
    declare(sources_file, {"daily": csv_spec(path, batch_size=1_000)})

    run = run_now(app)

    (source_run,) = run.source_runs
    assert (source_run.inserted, source_run.rejected) == (rows - len(bad), len(bad) + 1)
    with app.app_context():
        kept = db.session.execute(select(RawRecord.line, RawRecord.position, RejectedRecord.reason)
                                  .join(RejectedRecord, RejectedRecord.raw_record_id == RawRecord.id)
                                  .order_by(RawRecord.line)).all()
    assert [line for line, _, _ in kept] == sorted(n + 2 for n in bad)  # line 1 is the header; the twin is 3,001
    assert all(position.endswith(f":{line}") and "price_usd" in str(reason) for line, position, reason in kept)
