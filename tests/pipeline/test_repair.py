"""Repair runs through a real worker: backfill, reprocess and replay, each run twice, the second changing nothing."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from kasparro.db import db
from kasparro.fake_upstream.server import FakeUpstream
from kasparro.models import Checkpoint, MarketQuote, RejectedRecord, Run
from tests.conftest import ROOT, wait_for_run
from tests.pipeline.helpers import HEADER, csv_spec, declare, quote_count, run_now
from tests.pipeline.test_api_sources import gecko

pytestmark = pytest.mark.usefixtures("worker")

FEBRUARY = ("2026-02-01", "2026-02-28T23:59:59Z")


def repair(app: Flask, *args: str) -> Run:
    """Run a repair command with --wait and return the run it made."""
    result = app.test_cli_runner().invoke(args=["etl", *args, "--wait"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        run_id = db.session.execute(select(Run.id).order_by(Run.id.desc()).limit(1)).scalar_one()
    return wait_for_run(app, run_id)


def counts(run: Run) -> tuple[int, int, int, int]:
    (source_run,) = run.source_runs
    return source_run.extracted, source_run.inserted, source_run.updated, source_run.rejected


def checkpoint(app: Flask, source: str) -> tuple[Any, ...] | None:
    with app.app_context():
        found = db.session.get(Checkpoint, source)
        return None if found is None else (found.cursor, found.run_id, found.batch_id, found.updated_at)


def recorded_points(coins: list[str], start: datetime, end: datetime) -> int:
    """Count the recorded market chart points of `coins` in a window, from the project's data."""
    total = 0
    for coin in coins:
        chart = json.loads((ROOT / "data/upstream/coingecko/market_chart" / f"{coin}.json").read_text())
        total += sum(start.timestamp() * 1000 <= ms <= end.timestamp() * 1000 for ms, _ in chart["prices"])
    return total


def test_a_coingecko_backfill_loads_the_window_once_and_leaves_the_checkpoint(app: Flask, sources_file: Path,
                                                                             upstream: FakeUpstream) -> None:
    declare(sources_file, {"coingecko": gecko(upstream, max_pages=1)})
    run_now(app)
    before = checkpoint(app, "coingecko")
    start, end = (datetime.fromisoformat(v).replace(tzinfo=timezone.utc) if "T" not in v
                  else datetime.fromisoformat(v) for v in FEBRUARY)
    expected = recorded_points(["bitcoin", "ethereum"], start, end)

    first = repair(app, "backfill", "--source", "coingecko", "--start", FEBRUARY[0], "--end", FEBRUARY[1],
                   "--coins", "bitcoin,ethereum")
    second = repair(app, "backfill", "--source", "coingecko", "--start", FEBRUARY[0], "--end", FEBRUARY[1],
                    "--coins", "bitcoin,ethereum")

    assert expected > 40
    assert (first.trigger, first.status, counts(first)) == ("backfill", "success", (expected, expected, 0, 0))
    assert (second.status, counts(second)) == ("success", (expected, 0, 0, 0))
    assert second.source_runs[0].duplicates == expected
    with app.app_context():
        window = db.session.execute(select(MarketQuote.observed_at).where(MarketQuote.run_id == first.id)).scalars()
        assert all(start <= when <= end for when in window)
    assert checkpoint(app, "coingecko") == before
    listed = [r for r in upstream.requests if r["path"].endswith("/market_chart/range")]
    assert {r["path"].split("/")[-3] for r in listed} == {"bitcoin", "ethereum"}


def _csv(path: Path, rows: list[tuple[str, str, str]]) -> None:
    path.write_text(HEADER + "".join(f"{coin},{day},{price},1000,2000\n" for coin, day, price in rows))


def test_a_csv_backfill_loads_only_the_window_and_never_moves_the_checkpoint(app: Flask, sources_file: Path,
                                                                            tmp_path: Path) -> None:
    path = tmp_path / "quotes.csv"
    _csv(path, [("bitcoin", f"2024-0{m}-1{d}", f"{40000 + m * 100 + d}") for m in (1, 2, 3) for d in range(5)])
    declare(sources_file, {"vendor": csv_spec(path)})

    first = repair(app, "backfill", "--source", "vendor", "--start", "2024-02-01", "--end", "2024-02-29")
    after_backfill = checkpoint(app, "vendor")
    incremental = run_now(app)
    settled = checkpoint(app, "vendor")
    second = repair(app, "backfill", "--source", "vendor", "--start", "2024-02-01", "--end", "2024-02-29")

    assert (first.trigger, counts(first)) == ("backfill", (5, 5, 0, 0))
    assert after_backfill is None  # a backfill leaves no checkpoint behind
    # The run reads the file into raw chunks, a raw layer apart from the backfill's records: the five
    # backfilled lines are loaded again and change nothing.
    assert counts(incremental)[1] == 10 and incremental.source_runs[0].skipped == 5
    assert counts(second) == (5, 0, 0, 0) and checkpoint(app, "vendor") == settled
    assert quote_count(app, "vendor") == 15


def test_a_source_that_cannot_backfill_is_refused_naming_those_that_can(app: Flask, sources_file: Path,
                                                                       tmp_path: Path, upstream: FakeUpstream) -> None:
    from tests.pipeline.test_api_sources import paprika

    declare(sources_file, {"vendor": csv_spec(tmp_path / "q.csv"), "coinpaprika": paprika(upstream)})

    result = app.test_cli_runner().invoke(args=["etl", "backfill", "--source", "coinpaprika", "--start",
                                                "2024-01-01", "--end", "2024-01-02"])

    assert result.exit_code != 0
    assert "coinpaprika: a coinpaprika source cannot backfill; sources that can: vendor" in result.output


def test_reprocess_since_a_time_after_a_mapping_fix_updates_once_then_nothing(app: Flask, sources_file: Path,
                                                                            tmp_path: Path) -> None:
    path = tmp_path / "quotes.csv"
    _csv(path, [("bitcoin", "2024-01-01", "42000"), ("ethereum", "2024-01-01", "2300")])
    declare(sources_file, {"vendor": csv_spec(path)})
    run_now(app)
    settled = checkpoint(app, "vendor")
    # The fix: volume and market cap were mapped the wrong way round.
    swapped = {"source_asset_id": "currency", "observed_at": "date", "price_usd": "close",
               "volume_24h_usd": "market_cap", "market_cap_usd": "volume"}
    declare(sources_file, {"vendor": csv_spec(path, columns=swapped)})

    fixed = repair(app, "reprocess", "--source", "vendor", "--since", "2000-01-01")
    again = repair(app, "reprocess", "--source", "vendor", "--since", "2000-01-01")
    late = app.test_cli_runner().invoke(args=["etl", "reprocess", "--source", "vendor", "--since", "2999-01-01"])

    assert (fixed.trigger, counts(fixed)) == ("reprocess", (2, 0, 2, 0))
    assert counts(again) == (2, 0, 0, 0) and again.source_runs[0].skipped == 2
    assert checkpoint(app, "vendor") == settled
    with app.app_context():
        assert set(db.session.execute(select(MarketQuote.volume_24h_usd)).scalars()) == {2000}
    assert late.exit_code != 0 and "no stored raw records received since 2999-01-01" in late.output


def test_replay_loads_what_a_fix_made_valid_and_marks_each_reject(app: Flask, sources_file: Path,
                                                                 tmp_path: Path) -> None:
    path = tmp_path / "quotes.csv"
    _csv(path, [("bitcoin", "01/02/2024", "42000"), ("ethereum", "01/02/2024", "2300"),
                ("solana", "01/02/2024", "n/a")])
    declare(sources_file, {"vendor": csv_spec(path)})  # expects %Y-%m-%d: every row is rejected
    broken = run_now(app)
    settled = checkpoint(app, "vendor")
    declare(sources_file, {"vendor": csv_spec(path, date_format="%d/%m/%Y")})  # the fix

    first = repair(app, "replay-rejects", "--source", "vendor")
    with app.app_context():
        marks = {r.raw_record_id: (r.replay_run_id, r.replay_outcome, r.run_id, r.replayed_at is not None)
                 for r in db.session.execute(select(RejectedRecord)).scalars()}
    second = repair(app, "replay-rejects", "--source", "vendor", "--run", str(broken.id))

    assert (broken.status, counts(broken)) == ("partial", (3, 0, 0, 3))
    assert (first.trigger, first.status, counts(first)) == ("replay", "partial", (3, 2, 0, 1))
    assert sorted(v[1] for v in marks.values()) == ["loaded", "loaded", "rejected"]
    assert all(v[0] == first.id and v[2] == broken.id and v[3] for v in marks.values())
    assert counts(second) == (1, 0, 0, 1)  # only the one still rejected is retried, and it changes nothing
    assert quote_count(app, "vendor") == 2 and checkpoint(app, "vendor") == settled
    with app.app_context():
        still = db.session.execute(select(RejectedRecord).where(RejectedRecord.replay_outcome == "rejected")).scalar_one()
        assert still.replay_run_id == second.id and "price_usd" in json.dumps(still.reason)
    served = app.test_client().get("/rejects?source=vendor").get_json()["data"]
    assert sorted((r["replay_outcome"], r["replay_run_id"]) for r in served) == [
        ("loaded", first.id), ("loaded", first.id), ("rejected", second.id)]
