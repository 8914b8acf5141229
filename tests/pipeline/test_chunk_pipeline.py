"""A CSV file's raw layer as chunks, end to end on a real worker: lineage, rejects, repeats, reprocess, the API."""
from __future__ import annotations

import random
import subprocess
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, text

from kasparro.db import db
from kasparro.models import Asset, Checkpoint, MarketQuote, RawChunk, RawRecord, RejectedRecord, SourceRun
from kasparro.pipeline import chunk_sql
from kasparro.pipeline.extract import content_hash, payload_json
from kasparro.pipeline.records import validate_batch
from kasparro.sources.base import Chunk
from kasparro.tasks import enqueue_reprocess
from tests.conftest import wait_for_run
from tests.pipeline.activity import busy_pool_processes
from tests.pipeline.chunk_paths import csv_source
from tests.pipeline.helpers import HEADER, csv_spec, declare, run_now
from tests.pipeline.inprocess import run_in_process

pytestmark = pytest.mark.usefixtures("worker")

# 12 lines in batches of 4 (`batch_size`): chunk 1 is plain and valid (PostgreSQL decides it),
# chunk 2 holds a bad price (PostgreSQL types the other three lines and leaves that one to Python: one
# reject), lines 10-11 are quoted (read as records).
LINES = [
    "bitcoin,2019-04-20,5296.23,13893183515,93510546402",
    "ethereum,2019-04-20,174.26,6159014000,18409744213",
    "ripple,2019-04-20,0.33,1000,2000",
    "bitcoin,2019-04-21,5300.1,1,2",
    "ethereum,2019-04-21,n/a,1,2",
    "ripple,2019-04-21,0.34,1000,2000",
    "bitcoin,2019-04-22,5310,1,2",
    "ethereum,2019-04-22,175,1,2",
    '"ripple",2019-04-22,0.35,1000,2000',
    '"bitcoin",2019-04-23,5320,1,2',
    "ethereum,2019-04-23,176,1,2",
    "ripple,2019-04-23,0.36,1000,2000",
]


def _file(tmp_path: Path, lines: list[str] = LINES) -> Path:
    path = tmp_path / "daily.csv"
    path.write_text(HEADER + "".join(line + "\n" for line in lines))
    return path


def test_every_valid_line_loads_once_and_leads_back_to_the_bytes_received(app: Flask, sources_file: Path,
                                                                          tmp_path: Path,
                                                                          client: FlaskClient) -> None:
    path = _file(tmp_path)
    declare(sources_file, {"daily": csv_spec(path, batch_size=4)})

    run = run_now(app)

    (source_run,) = run.source_runs
    assert run.status == "partial"
    assert (source_run.extracted, source_run.inserted, source_run.rejected) == (12, 11, 1)
    with app.app_context():
        chunks = db.session.execute(select(RawChunk).order_by(RawChunk.first_line)).scalars().all()
        assert [(c.first_line, c.records) for c in chunks] == [(2, 4), (6, 4)]  # lines 10-13 hold quotes
        assert db.session.execute(select(func.count()).select_from(RawRecord).where(RawRecord.chunk_id.is_(None))
                                  ).scalar_one() == 4  # the quoted stretch, read record by record
        lineage = db.session.execute(select(MarketQuote.raw_chunk_id, MarketQuote.raw_line)
                                     .where(MarketQuote.raw_chunk_id.is_not(None))).all()
    file_lines = path.read_text().splitlines()
    assert len(lineage) == 7
    for chunk_id, line in lineage:
        shown = client.get(f"/raw/chunks/{chunk_id}/lines/{line}").get_json()["data"]
        assert shown["text"] == file_lines[line - 1] and shown["header"] == HEADER.strip()
    rejects = client.get("/rejects").get_json()["data"]
    assert [(r["position"], r["payload"]["close"], list(r["reason"])) for r in rejects] == \
        [("daily.csv:6", "n/a", ["price_usd"])]
    quote = client.get("/data?asset=bitcoin&sort=observed_at").get_json()["data"][0]
    assert (quote["raw_record_id"], quote["raw_line"]) == (None, 2) and quote["raw_chunk_id"] == chunks[0].id


def test_a_raw_line_outside_its_chunk_is_a_json_404(app: Flask, sources_file: Path, tmp_path: Path,
                                                    client: FlaskClient) -> None:
    declare(sources_file, {"daily": csv_spec(_file(tmp_path, LINES[:4]), batch_size=4)})
    run_now(app)
    with app.app_context():
        chunk_id = db.session.execute(select(RawChunk.id)).scalar_one()

    beyond = client.get(f"/raw/chunks/{chunk_id}/lines/6")
    unknown = client.get(f"/raw/chunks/{chunk_id + 1}/lines/2")

    assert beyond.status_code == unknown.status_code == 404
    assert "holds lines 2 to 5, not 6" in beyond.get_json()["error"]["message"]


def test_a_replaced_file_with_the_same_lines_loads_nothing_again(app: Flask, sources_file: Path,
                                                                 tmp_path: Path) -> None:
    path = _file(tmp_path, LINES[:8])
    declare(sources_file, {"daily": csv_spec(path, batch_size=4)})
    run_now(app)
    with app.app_context():  # as if the file had been replaced: the next run reads it from the start
        db.session.execute(text("UPDATE checkpoints SET cursor = '{}'"))
        db.session.commit()

    again = run_now(app)

    (source_run,) = again.source_runs
    assert (source_run.extracted, source_run.duplicates, source_run.inserted, source_run.updated) == (8, 8, 0, 0)
    with app.app_context():
        assert db.session.execute(select(func.count()).select_from(RawChunk)).scalar_one() == 2


def test_reprocessing_chunks_after_a_mapping_fix_updates_the_rows_once(app: Flask, sources_file: Path,
                                                                       tmp_path: Path) -> None:
    path = _file(tmp_path, LINES[:4])
    swapped = {"source_asset_id": "currency", "observed_at": "date", "price_usd": "close",
               "volume_24h_usd": "market_cap", "market_cap_usd": "volume"}
    declare(sources_file, {"daily": csv_spec(path, columns=swapped, batch_size=4)})
    run_now(app)
    declare(sources_file, {"daily": csv_spec(path, batch_size=4)})

    outcomes = []
    for _ in range(2):
        with app.app_context():
            run_id = enqueue_reprocess("daily").run.id
        (source_run,) = wait_for_run(app, run_id, 60).source_runs
        outcomes.append((source_run.extracted, source_run.updated, source_run.inserted, source_run.skipped))

    assert outcomes == [(4, 4, 0, 0), (4, 0, 0, 4)]
    with app.app_context():
        btc = db.session.execute(select(MarketQuote).where(MarketQuote.price_usd == 5296.23)).scalar_one()
        assert (btc.market_cap_usd, btc.volume_24h_usd) == (93510546402, 13893183515)


def test_reprocess_clears_a_reject_the_fix_makes_valid(app: Flask, sources_file: Path, tmp_path: Path) -> None:
    path = _file(tmp_path, ["bitcoin,20/04/2019,5296.23,1,2", "ethereum,21/04/2019,174.26,1,2"])
    declare(sources_file, {"daily": csv_spec(path, batch_size=4)})
    first = run_now(app)
    assert first.source_runs[0].rejected == 2
    declare(sources_file, {"daily": csv_spec(path, date_format="%d/%m/%Y", batch_size=4)})

    with app.app_context():
        run_id = enqueue_reprocess("daily").run.id
    (source_run,) = wait_for_run(app, run_id, 60).source_runs

    assert (source_run.inserted, source_run.rejected) == (2, 0)
    with app.app_context():
        assert db.session.execute(select(func.count()).select_from(RejectedRecord)).scalar_one() == 0


ATTEMPTS = 3


def test_chunks_sharing_keys_loaded_by_both_worker_processes_at_once_leave_each_keys_last_line(
        app: Flask, worker: subprocess.Popen, sources_file: Path, tmp_path: Path) -> None:
    # 3,000 lines over 100 keys in a shuffled order, in chunks of 50 that both worker processes transform
    # and load at the same time: every chunk shares keys with others, so the loads wait on each other's
    # keys under real concurrency. (Loads that commit out of order are rare here, as chunks are claimed in
    # order; tests/pipeline/test_transform_sharing.py holds the outcome of every order.)
    shuffle = random.Random(11)
    keys = [(coin, day) for coin in ("bitcoin", "ethereum", "ripple", "solana", "cardano") for day in range(1, 21)]
    picks = [shuffle.choice(keys) for _ in range(3000)]
    lines = [f"{coin},2019-04-{day:02d},{shuffle.randint(1, 10**6) / 100},{n},{n}" for n, (coin, day) in
             enumerate(picks)]
    last_line_wins = {(coin, day): Decimal(line.split(",")[2]) for (coin, day), line in zip(picks, lines)}

    # Whether both processes overlap is up to the scheduler: on a loaded machine one may finish every chunk
    # before the other starts. So the same file is loaded as a new source until an attempt shows both at
    # once; every attempt must still end in the law, and one that never overlaps fails the test.
    most_at_once = []
    for attempt in range(ATTEMPTS):
        name = f"daily{attempt}"
        folder = tmp_path / name
        folder.mkdir()
        declare(sources_file, {name: csv_spec(_file(folder, lines), batch_size=50)})

        with busy_pool_processes(worker.pid) as samples:
            run = run_now(app, timeout=120)

        (source_run,) = run.source_runs
        assert run.status == "success"
        assert (source_run.extracted, source_run.inserted) == (3000, len(last_line_wins))  # each key inserted once
        with app.app_context():
            loaded = {(slug, observed.day): price for slug, observed, price in db.session.execute(
                select(Asset.slug, MarketQuote.observed_at, MarketQuote.price_usd)
                .join(Asset, Asset.id == MarketQuote.asset_id).where(MarketQuote.source == name))}
            assert loaded == last_line_wins
            assert db.session.execute(select(Checkpoint.cursor).where(Checkpoint.source == name)
                                      ).scalar_one()["line"] == 3001
        # Both pool processes were inside a transaction of this run at one instant, more than once.
        most_at_once.append(max(map(len, samples), default=0))
        if sum(len(busy) == 2 for busy in samples) >= 2:
            return
    pytest.fail(f"in {ATTEMPTS} runs the pool processes were never both busy at once (at most {most_at_once})")


# Lines outside PostgreSQL's plain shapes, each with the field Python names: some bad everywhere, one a day whose
# cast raises inside PostgreSQL (its chunk is then read wholly in Python).
BAD_CELLS = [("price", "n/a", "price_usd"), ("price", "-5", "price_usd"), ("day", "20/04/2019", "_schema"),
             ("coin", "", "source_asset_id"), ("day", "2019-02-30", "_schema")]


CHUNK_LINES = 100


def _generated(rng: random.Random, count: int) -> tuple[list[str], dict[int, Decimal], dict[int, str]]:
    """Return lines, the price each valid line (by file line) loads, and the field each bad line is refused for.

    Valid lines have keys of their own (coin, day), so each one must load, with its price. A tenth are valid
    but not plain (a day without zero padding, which strptime reads and PostgreSQL's shape check leaves to
    Python); a tenth are bad; now and then a line repeats an earlier one byte for byte; lines 402 to 501 are
    all bad (a chunk with nothing for PostgreSQL to type).
    """
    lines: list[str] = []
    valid: dict[int, Decimal] = {}
    bad: dict[int, str] = {}
    for n in range(count):
        line_no = n + 2  # the header is line 1
        chunk_start = n - n % CHUNK_LINES
        if n > chunk_start and rng.random() < 0.03:
            # A repeat of a line of its chunk: a duplicate, never loaded or rejected twice. (A line repeating
            # one of another chunk is read again: a bad one counts as rejected again, on the one raw record.)
            lines.append(rng.choice(lines[chunk_start:n]))
            continue
        day = date(2019, 1, 1) + timedelta(days=n)
        cells = {"coin": f"coin{n % 40}", "day": day.isoformat(), "price": f"{rng.randint(1, 10**8) / 100}"}
        roll = rng.random()
        if 400 <= n < 500 or roll < 0.1:
            where, cell, field = rng.choice(BAD_CELLS)
            cells[where] = cell
            bad[line_no] = field
        elif roll < 0.2:
            cells["day"] = f"{day.year}-{day.month}-{day.day}"  # valid, doubtful to PostgreSQL if under 10
            valid[line_no] = Decimal(cells["price"])
        else:
            valid[line_no] = Decimal(cells["price"])
        lines.append(f"{cells['coin']},{cells['day']},{cells['price']},{n},{n}")
    return lines, valid, bad


@pytest.mark.parametrize("seed", [1, 2])
def test_the_lines_postgresql_leaves_to_python_load_with_the_chunk_or_are_rejects_with_their_line(
        app: Flask, sources_file: Path, tmp_path: Path, seed: int) -> None:
    lines, valid, bad = _generated(random.Random(seed), 1000)
    declare(sources_file, {"daily": csv_spec(_file(tmp_path, lines), batch_size=CHUNK_LINES)})

    run = run_now(app, timeout=120)

    (source_run,) = run.source_runs
    assert run.status == "partial", run.error
    assert (source_run.inserted, source_run.rejected) == (len(valid), len(bad))
    assert source_run.duplicates == len(lines) - len(valid) - len(bad)
    with app.app_context():
        loaded = db.session.execute(select(MarketQuote.raw_line, MarketQuote.price_usd)).all()
        rejected = db.session.execute(
            select(RawRecord.line, RejectedRecord.reason).join(RejectedRecord, RejectedRecord.raw_record_id ==
                                                               RawRecord.id)).all()
        runs = db.session.execute(select(func.count()).select_from(SourceRun)).scalar_one()
    # Every valid line loaded once, from its own line, with its own price; every bad line one reject of its line.
    assert len(loaded) == len(valid) and dict(loaded) == valid
    assert len(rejected) == len(bad)
    assert {line: next(iter(reason)) for line, reason in rejected} == bad
    assert runs == 1


def _misdated(rng: random.Random, count: int) -> list[str]:
    """Lines of a file read under '%d/%m/%Y' whose dates are mostly ISO: most are refused for their date by
    PostgreSQL; some carry cells it leaves to Python (quotes, a backslash, non-ASCII, a tab), some match."""
    lines = []
    for n in range(count):
        day = date(2019, 1, 1) + timedelta(days=n)
        cells = [f"coin{n % 40}", day.isoformat(), f"{rng.randint(1, 10**6) / 100}", str(n), str(n)]
        roll = rng.random()
        if roll < 0.1:
            cells[rng.randrange(5)] += rng.choice(["'", "é", "\\", "\t", " ", "%", "ü'x"])
        elif roll < 0.2:
            cells[1] = day.strftime("%d/%m/%Y")  # loads
        elif roll < 0.25:
            cells[1] = f"o'{n}"  # refused: its repr takes double quotes
        lines.append(",".join(cells))
    return lines


def _python_rejects(path: Path, tmp_path: Path) -> tuple[int, dict[str, tuple[Any, ...]]]:
    """What Python makes of a misdated file read as `daily`: its valid lines, and by position each reject's raw
    record (payload, hash) and reason."""
    reader = csv_source(tmp_path, "%d/%m/%Y")
    reader.path, reader.columns = path, {"source_asset_id": "currency", "observed_at": "date", "price_usd": "close",
                                         "volume_24h_usd": "volume", "market_cap_usd": "market_cap"}
    items = [item for part in reader.chunks(None, CHUNK_LINES)  # a stretch with a tab or a quote is a page
             for item in ([item for _, item in reader.chunk_items(part.header, part.data, part.first_line,
                                                                   part.byte_start)]
                          if isinstance(part, Chunk) else part.items)]
    outcome = validate_batch(reader, list(enumerate(item.payload for item in items)))
    return len(outcome.quotes), {items[n].position: (items[n].payload, content_hash(payload_json(items[n].payload)),
                                                     reason) for n, reason in outcome.rejects}


def _kept_rejects(app: Flask) -> dict[str, tuple[Any, ...]]:
    with app.app_context():
        kept = db.session.execute(
            select(RawRecord.position, RawRecord.payload, RawRecord.content_hash, RejectedRecord.reason)
            .join(RejectedRecord, RejectedRecord.raw_record_id == RawRecord.id)).all()
    return {position: tuple(rest) for position, *rest in kept}


def test_rejects_postgresql_words_for_a_wrong_date_format_are_the_raw_records_and_reasons_python_keeps(
        app: Flask, sources_file: Path, tmp_path: Path) -> None:
    path = _file(tmp_path, _misdated(random.Random(7), 1000))
    declare(sources_file, {"daily": csv_spec(path, date_format="%d/%m/%Y", batch_size=CHUNK_LINES,
                                             max_reject_ratio=1)})

    run = run_now(app, timeout=120)

    valid, expected = _python_rejects(path, tmp_path)
    (source_run,) = run.source_runs
    assert (source_run.inserted, source_run.rejected) == (valid, len(expected)) != (0, 0)
    assert _kept_rejects(app) == expected
    assert sum("does not match '%d/%m/%Y'" in str(reason) for *_, reason in expected.values()) > 600


def test_if_keeping_the_refused_lines_fails_python_reads_them_and_keeps_the_same_rejects(
        app: Flask, sources_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _file(tmp_path, _misdated(random.Random(8), 300))
    declare(sources_file, {"daily": csv_spec(path, date_format="%d/%m/%Y", batch_size=CHUNK_LINES,
                                             max_reject_ratio=1)})
    made = chunk_sql.plan

    def failing(*args: Any) -> chunk_sql.Plan | None:
        found = made(*args)
        return found if found is None else replace(found, keep_refused="SELECT 1/0 WHERE %(chunk)s > 0")

    monkeypatch.setattr(chunk_sql, "plan", failing)

    source_run = run_in_process(app, "daily", batch_size=CHUNK_LINES)

    valid, expected = _python_rejects(path, tmp_path)
    assert (source_run.status, source_run.inserted, source_run.rejected) == ("partial", valid, len(expected))
    assert _kept_rejects(app) == expected


def test_a_raw_chunk_is_kept_with_lz4_where_the_server_has_it_and_uncompressed_where_not_never_pglz(
        app: Flask, sources_file: Path, tmp_path: Path) -> None:
    lines = [f"coin{n % 40},{date(2019, 1, 1) + timedelta(days=n)},{n + 1},{n},{n}" for n in range(400)]
    declare(sources_file, {"daily": csv_spec(_file(tmp_path, lines), batch_size=CHUNK_LINES)})

    run = run_now(app)

    assert run.status == "success"
    with app.app_context():
        try:
            with db.session.begin_nested():
                db.session.execute(text("CREATE TEMP TABLE lz4_probe (data bytea COMPRESSION lz4)"))
            lz4 = True
        except Exception:  # noqa: BLE001 - "compression method lz4 not supported"
            lz4 = False
        methods = db.session.execute(text("SELECT DISTINCT pg_column_compression(data) FROM raw_chunks")).scalars()
        stored = sorted(methods, key=str)
        db.session.rollback()
    # Chunks of 100 lines are over 2 kB, so PostgreSQL compresses them whenever the column lets it.
    assert stored == (["lz4"] if lz4 else [None])
