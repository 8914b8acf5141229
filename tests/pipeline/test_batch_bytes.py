"""A batch is bounded in bytes beside its count (`max_batch_bytes`): laws over generated files and pages.

Lines are drawn from a few bytes to past `max_row_bytes`, the budget is a few KiB, so the laws are quick to
check: every line loads exactly once (or is one reject), no raw chunk or page passes the budget, the
checkpoint ends at the file's end, and a run resumed after a failure mid-file loads nothing twice.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from kasparro.db import db
from kasparro.errors import InjectedFault
from kasparro.fake_upstream.server import FakeUpstream
from kasparro.pipeline import extract as extract_stage
from kasparro.pipeline import runs
from kasparro.pipeline.extract import payload_json, within_budget
from kasparro.pipeline.faults import Fault
from kasparro.sources import SourceContext
from kasparro.sources.base import UNREADABLE, Page, RawItem, RequestStats
from kasparro.sources.csv_file import CsvSource
from kasparro.sources.json_file import JsonSource
from tests.bounded import MIB, run_bounded
from tests.pipeline.helpers import csv_spec, declare
from tests.pipeline.inprocess import clean_tables, law_holds, lease, run_in_process, start

HEADER = b"currency,date,close,volume,market_cap,note\n"
LIMITS = {"max_field_bytes": 600, "max_row_bytes": 1200}
JSON_FIELDS = {"source_asset_id": "id", "observed_at": "t", "price_usd": "p"}


@st.composite
def long_line_files(draw: Any) -> tuple[bytes, set[str], int]:
    """A CSV file of lines from a few bytes to past max_row_bytes; its good coins, and its count of bad rows.

    Plain lines go to raw chunks, quoted ones to pages of records; a field over max_field_bytes and a
    row over max_row_bytes are rejects. Every good row is a coin of its own, so each loads one quote.
    """
    lines, good, bad = [], set(), 0
    count = draw(st.integers(1, 40))
    for number in range(count):
        kinds = ("plain",) * 6 + ("quoted", "long_field", "long_row") + (("blank",) if number < count - 1 else ())
        kind = draw(st.sampled_from(kinds))
        if kind == "blank":  # not the last: a file's checkpoint ends after its last record
            lines.append(b"")
            continue
        length = draw({"long_field": st.integers(601, 1100), "long_row": st.integers(1300, 6000)}.get(
            kind, st.one_of(st.integers(0, 40), st.integers(40, 560))))
        note = b"x" * length if kind != "quoted" else b'"' + b"y" * length + b'"'
        lines.append(b"coin%d,2019-04-20,%d,1,2,%s" % (number, number + 1, note))
        if kind in ("plain", "quoted"):
            good.add(f"coin{number}")
        else:
            bad += 1
    return HEADER + b"\n".join(lines) + b"\n", good, bad


def _fail_midway(app: Flask, name: str, batch_size: int, budget: int, after: int, loaded: int) -> None:
    """Run `name` until an injected fault stops its extract after `after` records; load `loaded` batches; fail it."""
    with app.app_context():
        stages = start(name)
        source_run = stages.source_run()
        lease().take(db.session, source_run.source, source_run.run_id)
        runs.start_source(db.session, source_run)
        try:
            extract_stage.extract(db.session, source_run, stages.source, RequestStats(), batch_size, lease(),
                                  faults=(Fault(name, "extract", after),), batch_bytes=budget)
        except InjectedFault:
            db.session.rollback()
        batches = stages.batches()[:loaded]
        for batch in batches:
            stages.transform(batch)
        for batch in batches:
            stages.load(batch)
        runs.fail_source(db.session, stages.source_run_id, "worker lost")
        db.session.commit()


def _stored_bytes() -> tuple[int, int]:
    """The largest raw chunk, and the largest page batch's payloads as received (canonical JSON), in bytes."""
    chunk = db.session.execute(text("SELECT coalesce(max(octet_length(data)), 0) FROM raw_chunks")).scalar_one()
    sizes: dict[int, int] = {}
    for batch_id, payload in db.session.execute(text(
            "SELECT r.batch_id, r.payload FROM raw_records r JOIN raw_batches b ON b.id = r.batch_id"
            " WHERE b.chunk_id IS NULL")):
        received = {key: value for key, value in payload.items() if key != UNREADABLE}
        sizes[batch_id] = sizes.get(batch_id, 0) + len(payload_json(received))
    return chunk, max(sizes.values(), default=0)


def _checkpoint() -> dict[str, Any]:
    return db.session.execute(text("SELECT cursor FROM checkpoints WHERE source = 'daily'")).scalar_one()


def _run_file(app: Flask, sources_file: Path, spec: dict[str, Any], batch_size: int, budget: int,
              failure: tuple[int, int] | None) -> Any:
    """Declare `spec` as source `daily`, optionally fail a first run midway, then run it to the end."""
    declare(sources_file, {"daily": spec})
    if failure is not None:
        _fail_midway(app, "daily", batch_size, budget, *failure)
    source_run = run_in_process(app, "daily", batch_size)
    assert source_run.status != "failed", source_run.error
    assert law_holds(source_run)
    return source_run


def _rejected_positions() -> int:
    return db.session.execute(text("SELECT count(DISTINCT rr.position) FROM rejected_records r"
                                    " JOIN raw_records rr ON rr.id = r.raw_record_id")).scalar_one()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(drawn=long_line_files(), budget=st.integers(1200, 2400), batch_size=st.integers(1, 30),
       failure=st.none() | st.tuples(st.integers(0, 30), st.integers(0, 30)))
def test_lines_of_any_length_load_once_in_batches_within_the_byte_budget_and_resume_without_doubling(
        app: Flask, sources_file: Path, tmp_path: Path, drawn: tuple[bytes, set[str], int], budget: int,
        batch_size: int, failure: tuple[int, int] | None) -> None:
    data, good, bad = drawn
    with app.app_context():
        clean_tables()
    path = tmp_path / "daily.csv"
    path.write_bytes(data)
    _run_file(app, sources_file, csv_spec(path, **LIMITS, max_batch_bytes=budget), batch_size, budget, failure)

    with app.app_context():
        loaded = db.session.execute(text("SELECT sum(loaded) FROM run_sources")).scalar_one()
        coins = db.session.execute(text("SELECT source_asset_id FROM market_quotes q JOIN asset_aliases a"
                                        " ON a.asset_id = q.asset_id AND a.source = 'daily'")).scalars().all()
        rejected = _rejected_positions()
        chunk_bytes, page_bytes = _stored_bytes()
        cursor = _checkpoint()
    assert sorted(coins) == sorted(good) and loaded == len(good)  # each good line once, over both runs
    assert rejected == bad
    assert chunk_bytes <= budget and page_bytes <= budget
    assert (cursor["offset"], cursor["line"]) == (len(data), data.count(b"\n"))  # the header is line 1


@st.composite
def ndjson_files(draw: Any) -> tuple[bytes, set[str], int]:
    """NDJSON lines of drawn lengths, some over max_record_bytes; the good coins and the count of bad lines."""
    lines, good, bad = [], set(), 0
    for number in range(draw(st.integers(1, 40))):
        length = draw(st.one_of(st.integers(0, 40), st.integers(40, 1100), st.integers(1300, 4000)))
        lines.append(b'{"id":"coin%d","t":"2019-04-20T00:00:00Z","p":%d,"note":"%s"}'
                     % (number, number + 1, b"z" * length))
        if len(lines[-1]) < 1200:
            good.add(f"coin{number}")
        else:
            bad += 1
    return b"\n".join(lines) + b"\n", good, bad


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(drawn=ndjson_files(), budget=st.integers(1200, 2400), batch_size=st.integers(1, 30),
       failure=st.none() | st.tuples(st.integers(0, 30), st.integers(0, 30)))
def test_ndjson_lines_of_any_length_load_once_in_pages_within_the_byte_budget(
        app: Flask, sources_file: Path, tmp_path: Path, drawn: tuple[bytes, set[str], int], budget: int,
        batch_size: int, failure: tuple[int, int] | None) -> None:
    data, good, bad = drawn
    with app.app_context():
        clean_tables()
    path = tmp_path / "daily.ndjson"
    path.write_bytes(data)
    spec = {"kind": "json", "path": str(path), "fields": JSON_FIELDS, "settle_seconds": 0, "max_record_bytes": 1200,
            "max_batch_bytes": budget}
    _run_file(app, sources_file, spec, batch_size, budget, failure)

    with app.app_context():
        loaded = db.session.execute(text("SELECT sum(loaded) FROM run_sources")).scalar_one()
        quotes = db.session.execute(text("SELECT count(*) FROM market_quotes")).scalar_one()
        rejected = _rejected_positions()
        _, page_bytes = _stored_bytes()
        cursor = _checkpoint()
    assert quotes == loaded == len(good)
    assert rejected == bad
    assert page_bytes <= budget
    assert (cursor["offset"], cursor["line"]) == (len(data), data.count(b"\n"))


def test_an_api_page_over_the_budget_is_cut_into_batches_that_load_every_record_once(
        app: Flask, sources_file: Path) -> None:
    with FakeUpstream() as upstream:
        upstream.start()
        declare(sources_file, {"coinpaprika": {"kind": "coinpaprika", "base_url": upstream.coinpaprika_url,
                                               "requests_per_minute": 600, "max_batch_bytes": 16384}})

        source_run = run_in_process(app, "coinpaprika", batch_size=5000)  # one answer, one page of 300 coins

    assert source_run.status == "success", source_run.error
    assert (source_run.extracted, source_run.loaded) == (300, 300)
    with app.app_context():
        batches = db.session.execute(text("SELECT count(*) FROM raw_batches WHERE run_source_id = :id"),
                                     {"id": source_run.id}).scalar_one()
        _, page_bytes = _stored_bytes()
    assert batches > 1 and page_bytes <= 16384


@st.composite
def quoted_files(draw: Any) -> tuple[bytes, int]:
    """A CSV file of plain and quoted rows (chunks and pages) of drawn lengths up to max_row_bytes; its row count."""
    lines = []
    for number in range(draw(st.integers(1, 60))):
        length = draw(st.one_of(st.integers(0, 40), st.integers(40, 550), st.integers(550, 1150)))
        # Mostly plain, so a raw chunk may run long; a field over max_field_bytes must be quoted to be one.
        quoted = draw(st.integers(0, 4)) == 0 or length >= 550
        note = b'"' + b"y" * length + b'"' if quoted else b"x" * length
        lines.append(b"coin%d,2019-04-20,1,1,1,%s" % (number, note))
    return HEADER + b"\n".join(lines) + b"\n", len(lines)


@settings(max_examples=200, deadline=None)
@given(drawn=quoted_files(), budget=st.integers(1200, 2400), size=st.integers(1, 30))
def test_a_files_chunks_and_pages_each_cover_at_most_the_budget_and_end_at_the_files_end(
        tmp_path_factory: pytest.TempPathFactory, drawn: tuple[bytes, int], budget: int, size: int) -> None:
    data, rows = drawn
    path = tmp_path_factory.mktemp("quoted") / "daily.csv"
    path.write_bytes(data)
    source = CsvSource("daily", csv_spec(path, **LIMITS), SourceContext())

    offset, read = len(HEADER), 0
    for part in source.chunks(None, size, budget):
        assert part.cursor["offset"] - offset <= budget  # the bytes of the file it holds
        offset, read = part.cursor["offset"], read + (len(part.items) if isinstance(part, Page) else part.records)

    assert (offset, read) == (len(data), rows)


@settings(max_examples=200, deadline=None)
@given(drawn=ndjson_files(), budget=st.integers(1200, 2400), size=st.integers(1, 30))
def test_an_ndjson_files_pages_each_cover_at_most_the_budget_but_a_reject_and_end_at_the_files_end(
        tmp_path_factory: pytest.TempPathFactory, drawn: tuple[bytes, set[str], int], budget: int, size: int) -> None:
    data, good, bad = drawn
    path = tmp_path_factory.mktemp("ndjson") / "daily.ndjson"
    path.write_bytes(data)
    source = JsonSource("daily", {"path": str(path), "fields": JSON_FIELDS, "settle_seconds": 0,
                                  "max_record_bytes": 1200}, SourceContext())

    offset, read = 0, 0
    for page in source.pages(None, size, budget):
        # A line over max_record_bytes is a reject holding a 1 KiB prefix of it: the rest is never held.
        rejected = sum(item.payload["_bytes"] for item in page.items if item.error)
        assert page.cursor["offset"] - offset - rejected <= budget
        offset, read = page.cursor["offset"], read + len(page.items)

    assert (offset, read) == (len(data), len(good) + bad)


def _items(sizes: list[int]) -> list[RawItem]:
    return [RawItem({"n": number, "pad": "x" * size}, str(number)) for number, size in enumerate(sizes)]


@settings(max_examples=100, deadline=None)
@given(pages=st.lists(st.lists(st.integers(0, 300), min_size=1, max_size=12), max_size=6),
       budget=st.integers(40, 600))
def test_a_page_cut_by_bytes_keeps_every_item_in_order_and_the_cursor_of_the_page_before_until_its_last_part(
        pages: list[list[int]], budget: int) -> None:
    given_pages = [Page(_items(sizes), {"page": number}) for number, sizes in enumerate(pages)]

    parts = list(within_budget(given_pages, budget, {"page": "before"}))

    assert [item for part in parts for item in part.items] == [item for page in given_pages for item in page.items]
    for part in parts:
        held = sum(len(payload_json(item.payload)) for item in part.items)  # type: ignore[union-attr]
        assert held <= budget or len(part.items) == 1  # type: ignore[union-attr]
    # A part's cursor is its page's only on the page's last part; before it, the cursor of the page before.
    cursors, before = [], {"page": "before"}
    for page in given_pages:
        first_items = [part.items[0] for part in parts]  # type: ignore[union-attr]
        taken = [item for item in first_items if any(item is mine for mine in page.items)]
        cursors += [before] * (len(taken) - 1) + [page.cursor]
        before = page.cursor
    assert [part.cursor for part in parts] == cursors


def test_a_row_limit_over_the_batch_budget_is_refused_naming_both_settings(app: Flask, sources_file: Path,
                                                                            tmp_path: Path) -> None:
    path = tmp_path / "daily.csv"
    path.write_bytes(HEADER + b"bitcoin,2019-04-20,1,1,1,\n")
    declare(sources_file, {"daily": csv_spec(path, max_row_bytes=8192, max_batch_bytes=4096)})

    source_run = run_in_process(app, "daily")

    assert source_run.status == "failed"
    assert "max_row_bytes 8192 is over max_batch_bytes 4096" in source_run.error


def test_a_json_record_limit_over_the_batch_budget_is_refused_naming_both_settings(
        app: Flask, sources_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "daily.ndjson"
    path.write_bytes(b'{"id":"bitcoin","t":"2019-04-20T00:00:00Z","p":1}\n')
    declare(sources_file, {"daily": {"kind": "json", "path": str(path), "fields": JSON_FIELDS, "settle_seconds": 0,
                                     "max_batch_bytes": 4096}})  # max_record_bytes: 1 MiB by default

    source_run = run_in_process(app, "daily")

    assert source_run.status == "failed"
    assert "max_record_bytes 1048576 is over max_batch_bytes 4096" in source_run.error


def read_chunks(path: str, max_bytes: int) -> dict[str, int]:
    """Read a CSV file as extract does (raw chunks, else pages); return how many of each and the largest chunk."""
    source = CsvSource("big", csv_spec(Path(path)), SourceContext())
    found = {"chunks": 0, "pages": 0, "largest": 0, "lines": 0}
    for part in source.chunks(None, 20_000, max_bytes):
        if isinstance(part, Page):
            found["pages"] += 1
            found["lines"] += len(part.items)
        else:
            found["chunks"] += 1
            found["lines"] += part.records
            found["largest"] = max(found["largest"], len(part.data))
    return found


@pytest.mark.parametrize(("lines", "line_kib"), [
    (1000, 100),      # plain lines under max_field_bytes: raw chunks
    (110, 900),       # fields over max_field_bytes, rows under max_row_bytes: pages of rejects
    (3, 40 * 1024),   # rows over max_row_bytes, read through and never held
])
def test_reading_a_file_of_long_lines_holds_a_few_budgets_not_the_file(tmp_path: Path, lines: int,
                                                                       line_kib: int) -> None:
    path = tmp_path / "long.csv"
    with open(path, "wb") as out:  # about 100 MiB each, written a KiB at a time: the child's peak starts from ours
        out.write(HEADER)
        for number in range(lines):
            out.write(b"coin%d,2019-04-20,1,1,1," % number)
            out.writelines([b"x" * 1024] * (line_kib - 1))
            out.write(b"\n")

    outcome = run_bounded("tests.pipeline.test_batch_bytes:read_chunks", str(path), 8 * MIB, memory_mib=1024)

    assert outcome.clean(), outcome
    assert outcome.value["lines"] == lines and outcome.value["largest"] <= 8 * MIB
    # A chunk, its lines while they are split and the chunk before it: a few budgets, never the 100 MiB file.
    assert outcome.peak_bytes - outcome.baseline_bytes < 48 * MIB, outcome.peak_bytes // MIB
