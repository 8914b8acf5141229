"""Laws over generated messy CSV files, through every stage in process against the migrated database.

(a) a row-level fault never fails the source; (b) every record written is read,
and extracted = loaded + rejected + duplicates + skipped; (c) transform and load
calls repeated and permuted, as redelivery does, leave the same tables as one
call of each in order.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from kasparro import tasks
from kasparro.db import db
from tests.pipeline.helpers import HEADER, csv_spec, declare
from tests.pipeline.inprocess import Stages, clean_tables, law_holds, run_in_process

LIMITS = {"max_field_bytes": 48, "max_row_bytes": 160}
COINS = ("bitcoin", "ethereum", "ripple")
DATES = ("2019-04-20", "2019-04-21")
PRICES = ("1", "2.5", "1e3")
# Rows that are wrong, none with a quote (so they may follow a stray quote without closing it).
FAULTS = (
    b"ripple,2019-04-20",                                  # columns missing
    b"ripple,2019-04-20,1,2,3,4,5",                        # extra columns
    b"ripple,2019-04-20,n/a,1,1",                          # not a number
    b",,,,",                                               # nothing in any column
    b"x" * 60 + b",2019-04-20,1,1,1",                      # a field over max_field_bytes
    b"ripple,2019-04-20,1," + b",".join([b"1"] * 90),      # a row over max_row_bytes
    b"bit\xffcoin,2019-04-20,1,1,1",                       # not UTF-8
    b"bit\x00coin,2019-04-20,1,1,1",                       # a NUL byte
    b"bit\rcoin,2019-04-20,1,1,1",                         # a bare carriage return
)
STRAYS = (b'"ripple,2019-04-20,1,1,1', b'ripple,"2019-04-20,1,1,1')


@st.composite
def good_rows(draw: Any, quotes: bool) -> bytes:
    """A valid row; with `quotes`, its coin may be quoted, hold a delimiter, a newline or a literal quote."""
    coin = draw(st.sampled_from(COINS))
    if quotes:
        coin = draw(st.sampled_from((coin, f'"{coin}"', f'"{coin},x"', f'"{coin}\nx"', f'"{coin}""x"""',
                                     f'{coin[:3]}"{coin[3:]}')))
    date, price = draw(st.sampled_from(DATES)), draw(st.sampled_from(PRICES))
    if quotes:
        date = draw(st.sampled_from((date, f'"{date}"', f'"{date}\n"')))  # the last one is not a date
    return f"{coin},{date},{price},100,200".encode()


def _rows(draw: Any, records: list[bytes], count: int, quotes: bool) -> list[bytes | None]:
    """Draw `count` lines (None: blank) into `records`; duplicates repeat an earlier record exactly."""
    lines: list[bytes | None] = []
    for _ in range(count):
        kind = draw(st.sampled_from(("good", "good", "fault", "blank", "duplicate")))
        earlier = [r for r in records if quotes or b'"' not in r]
        if kind == "blank":
            lines.append(None)
            continue
        if kind == "duplicate" and earlier:
            row = draw(st.sampled_from(earlier))
        elif kind == "fault":
            row = draw(st.sampled_from(FAULTS))
        else:
            row = draw(good_rows(quotes))
        records.append(row)
        lines.append(row)
    return lines


@st.composite
def messy_files(draw: Any) -> tuple[bytes, int]:
    """A CSV file and the number of records written in it (blank lines are not records).

    At most one stray quote, and nothing after it with a quote, so where each
    record ends does not depend on how the reader recovers.
    """
    records: list[bytes] = []
    lines = _rows(draw, records, draw(st.integers(0, 12)), quotes=True)
    if draw(st.booleans()):
        stray = draw(st.sampled_from(STRAYS))
        records.append(stray)
        lines.append(stray)
        lines += _rows(draw, records, draw(st.integers(0, 8)), quotes=False)
    ending = draw(st.sampled_from((b"\n", b"\r\n")))
    body = b"".join((line or b"") + ending for line in lines)
    if body.endswith(ending) and lines and lines[-1] is not None and draw(st.booleans()):
        body = body[:-len(ending)]  # a settled last line without a line break
    bom = draw(st.sampled_from((b"", b"\xef\xbb\xbf")))
    return bom + HEADER.encode().replace(b"\n", ending) + body, len(records)


redeliveries = st.lists(st.tuples(st.sampled_from(("transform", "load")), st.integers(0, 9)), max_size=12)


def _replay(schedule: list[tuple[str, int]]) -> Any:
    def meddle(stages: Stages) -> None:
        # A second delivery of the extract, through the extract task's own body (in this process, no
        # broker): it must find the extraction done by the check in kasparro/tasks.py, not by a helper's.
        tasks.extract(stages.source_run_id)
        for _ in range(2):
            for step, index in schedule:
                batches = stages.batches()
                if batches:
                    getattr(stages, step)(batches[index % len(batches)])
    return meddle


def snapshot() -> dict[str, list[Any]]:
    """The tables that must not depend on delivery order, with ids (order-dependent) left out.

    Quotes are compared by their natural key (the source's coin id, the time) and their lineage, whichever
    way they loaded: a quote loaded from a raw chunk has no raw record, only the chunk's line.
    """
    queries = {
        "market_quotes": "SELECT q.source, al.source_asset_id, q.observed_at, c.first_line, q.raw_line, r.position,"
                         " q.price_usd, q.market_cap_usd, q.volume_24h_usd, q.percent_change_24h FROM market_quotes q"
                         " LEFT JOIN LATERAL (SELECT min(source_asset_id) AS source_asset_id FROM asset_aliases"
                         "  WHERE asset_id = q.asset_id AND source = q.source) al ON true"
                         " LEFT JOIN raw_chunks c ON c.id = q.raw_chunk_id"
                         " LEFT JOIN raw_records r ON r.id = q.raw_record_id ORDER BY 1, 2, 3",
        "raw_chunks": "SELECT first_line, records, byte_start, byte_end, sha256, repeats FROM raw_chunks ORDER BY 1",
        "raw_records": "SELECT r.id, r.position, r.payload::text, r.content_hash, b.seq FROM raw_records r"
                       " JOIN raw_batches b ON b.id = r.batch_id ORDER BY r.id",
        "rejected_records": "SELECT r.position, j.reason::text FROM rejected_records j"
                            " JOIN raw_records r ON r.id = j.raw_record_id ORDER BY 1",
    }
    return {name: [tuple(row) for row in db.session.execute(text(sql))] for name, sql in queries.items()}


def _counts(source_run: Any) -> tuple[int, ...]:
    return (source_run.extracted, source_run.loaded, source_run.rejected, source_run.duplicates, source_run.skipped)


@settings(derandomize=True, max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                                   HealthCheck.too_slow])
@given(file=messy_files(), batch_size=st.integers(1, 5), schedule=redeliveries)
def test_messy_files_load_by_the_counting_law_whatever_the_delivery_order(
        app: Flask, sources_file: Path, tmp_path: Path, file: tuple[bytes, int], batch_size: int,
        schedule: list[tuple[str, int]]) -> None:
    data, written = file
    path = tmp_path / "messy.csv"
    path.write_bytes(data)
    declare(sources_file, {"messy": csv_spec(path, **LIMITS)})
    outcomes = []
    for meddle in (None, _replay(schedule)):
        with app.app_context():
            clean_tables()
        source_run = run_in_process(app, "messy", batch_size, between=meddle)
        with app.app_context():
            outcomes.append((source_run, snapshot()))

    (once, tables_once), (redelivered, tables_redelivered) = outcomes
    assert once.status in ("success", "partial"), once.error                     # (a)
    assert once.extracted == written and law_holds(once), _counts(once)          # (b)
    assert (redelivered.status, _counts(redelivered)) == (once.status, _counts(once))  # (c)
    assert tables_redelivered == tables_once
