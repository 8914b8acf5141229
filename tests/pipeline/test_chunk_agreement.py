"""PostgreSQL reading a raw chunk agrees with the CSV source reading it line by line in Python.

The fast path (`chunks._parse_and_type`, statements from `chunk_sql`) may decline a chunk; whenever
it decides one, every line must be a quote with exactly the values the careful path (the CSV source's
own parser, then `validation.load_quote`) gives it. Messy cells are generated, not hand-picked.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import event, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from kasparro.db import db
from kasparro.pipeline import chunk_sql, chunks
from kasparro.pipeline.transform import validate_batch
from kasparro.sources import SourceContext
from kasparro.sources.base import Chunk, RequestStats
from kasparro.sources.csv_file import CsvSource

COLUMNS = {"source_asset_id": "coin", "symbol": "ticker", "observed_at": "day", "price_usd": "close",
           "market_cap_usd": "cap", "volume_24h_usd": "volume", "percent_change_24h": "change"}
HEADER = ["coin", "ticker", "day", "close", "cap", "volume", "change", "note"]
TYPED = ("sid", "symbol", "name", "observed_at", "price_usd", "market_cap_usd", "volume_24h_usd",
         "percent_change_24h")

ids = st.one_of(st.sampled_from(["bitcoin", " eth ", "\tsol", "", "x" * 201, "a b", "TON", "c;d", "-1"]),
                st.text(alphabet="abcxyz-_. 0123456789\t", max_size=8))
tickers = st.sampled_from(["btc", "", " Eth", "x" * 41, "SOL", "a\tb"])
days = st.one_of(st.sampled_from(["2019-01-05", "2019-1-5", "2019-02-30", "2008-12-31", "2999-01-01", "20190105",
                                  " 2019-01-05", "", "Jan 5 2019", "0000-01-01", "2019-13-01", "2019-01-05T10:00",
                                  "2020-02-29", "2019--1-01", "2019-01-5-"]),
                 st.text(alphabet="0123456789-", min_size=10, max_size=10))
numbers = st.one_of(st.sampled_from(["1", "1.5", " 2 ", "-1", "1e5", "1E+5", ".5", "5.", "1_000", "0x1A", "NaN",
                                     "inf", "1e400", "", "abc", "1,000", "+3", "1e-7", "1e16", "10000000000000001",
                                     "1000000000000", "1000000000001", "-100", "-100.5", "1e", "e5", "1.2.3",
                                     "--1", "1-2", "0", "-0"]),
                    st.text(alphabet="0123456789.eE+-", max_size=6),
                    st.decimals(min_value=-200, max_value=10**13, allow_nan=False, places=4).map(str))


# Rows the careful way accepts, in the shapes the fast path takes and some it does not.
good_numbers = st.one_of(st.sampled_from(["1e5", ".5", "5.", "+3", " 2 ", "0", "-0", "", "1E+2"]),
                         st.decimals(min_value=0, max_value=10**6, allow_nan=False, places=4).map(str))
good_rows = st.tuples(st.sampled_from(["bitcoin", " eth ", "\tsol", "TON", "a b", "-1"]),
                      st.sampled_from(["btc", "", " Eth", "SOL"]),
                      st.sampled_from(["2019-01-05", "2020-02-29", " 2019-01-05", "2019-1-5", "2019-01-05 "]),
                      st.decimals(min_value=0, max_value=10**12, allow_nan=False, places=6).map(str),
                      good_numbers, good_numbers, good_numbers).map(lambda cells: [*cells, "n"])

# Rows in only the shapes the fast path takes: chunks of them are decided, so the comparison has lines to check.
plain_rows = st.tuples(st.sampled_from(["bitcoin", " eth ", "sol", "TON"]), st.sampled_from(["btc", "", " Eth", "SOL"]),
                       st.sampled_from(["2019-01-05", "2020-02-29"]),
                       st.decimals(min_value=0, max_value=10**12, allow_nan=False, places=6).map(str),
                       good_numbers, good_numbers, good_numbers).map(lambda cells: [*cells, "n"])


@st.composite
def rows(draw: Any) -> list[str]:
    if draw(st.integers(0, 9)) < 7:
        return draw(good_rows)
    cells = [draw(ids), draw(tickers), draw(days), draw(numbers), draw(numbers), draw(numbers), draw(numbers), "n"]
    if draw(st.integers(0, 9)) == 0:  # now and then a row with a cell too many or too few
        cells = cells + ["extra"] if draw(st.booleans()) else cells[:-2]
    return cells


def _source(tmp_path: Path, date_format: str | None = "%Y-%m-%d") -> CsvSource:
    spec = {"kind": "csv", "path": str(tmp_path / "q.csv"), "columns": COLUMNS, "settle_seconds": 0}
    if date_format:
        spec["date_format"] = date_format
    return CsvSource("q", spec, SourceContext(secrets={}, base_dir=tmp_path, stats=RequestStats()))


def _first_chunk(source: CsvSource, lines: list[list[str]]) -> Chunk | None:
    body = "".join(",".join(cells) + "\n" for cells in lines)
    source.path.write_text(",".join(HEADER) + "\n" + body)
    first = next(iter(source.chunks(None, 1000)), None)
    return first if isinstance(first, Chunk) else None


def _fast(source: CsvSource, chunk: Chunk) -> dict[int, tuple[Any, ...]] | None:
    """Run the fast path on the chunk; return its typed rows by line, or None if it declined."""
    plan = chunk_sql.plan(source.header_names(chunk.header), source.columns, source.date_format, source.delimiter)
    assert plan is not None
    try:
        if chunks._parse_and_type(db.session, chunk, plan) is None:
            return None
        found = db.session.execute(text(f"SELECT line, {', '.join(TYPED)} FROM chunk_typed")).all()
        return {row[0]: tuple(row[1:]) for row in found}
    finally:
        db.session.rollback()


def _careful(source: CsvSource, chunk: Chunk) -> tuple[dict[int, tuple[Any, ...]], set[int]]:
    """Read the chunk the careful way: the CSV source's parser and validation in Python."""
    items = source.chunk_items(chunk.header, chunk.data, chunk.first_line, chunk.byte_start)
    # A line repeating an earlier one byte for byte is loaded once (the first).
    outcome = validate_batch(source, [(line, item.payload) for line, item in items if line not in chunk.repeats])
    quotes = {line: (q["source_asset_id"], q.get("symbol"), q.get("name"), q["observed_at"], q["price_usd"],
                     q["market_cap_usd"], q["volume_24h_usd"], q["percent_change_24h"]) for line, q in outcome.quotes}
    return quotes, {line for line, _ in outcome.rejects}


@pytest.mark.usefixtures("app_ctx")
def test_whenever_postgresql_decides_a_chunk_it_keeps_what_python_keeps(app: Flask, tmp_path: Path) -> None:
    decided: list[int] = []  # lines of each example PostgreSQL decided, so declining them all cannot pass

    @settings(max_examples=150, deadline=None, database=None)
    @given(lines=st.one_of(st.lists(rows(), min_size=1, max_size=12), st.lists(plain_rows, min_size=2, max_size=12)))
    def agree(lines: list[list[str]]) -> None:
        source = _source(tmp_path)
        chunk = _first_chunk(source, lines)
        if chunk is None:
            return  # not a plain stretch (a blank line): read record by record, never by PostgreSQL

        fast = _fast(source, chunk)

        event("decided by PostgreSQL" if fast is not None else "declined")
        if fast is not None:
            quotes, rejects = _careful(source, chunk)
            assert rejects == set()
            assert fast == quotes
            decided.append(len(fast))

    agree()
    # Half the examples are plain rows the fast path takes, so dozens of chunks of several lines are decided
    # (80 to 100 of 150 when written); a fast path that declined nearly everything would compare nothing.
    several = sum(lines > 1 for lines in decided)
    assert len(decided) >= 40 and several >= 20, f"{len(decided)} of 150 examples decided, {several} of several lines"


@pytest.mark.usefixtures("app_ctx")
@pytest.mark.parametrize("date_format", ["%Y-%m-%d", None])
def test_a_clean_chunk_is_decided_by_postgresql_with_the_values_python_gives(app: Flask, tmp_path: Path,
                                                                             date_format: str | None) -> None:
    day = "2019-01-05" if date_format else "2019-01-05T10:30:00+02:00"
    lines = [["bitcoin", "btc", day, "3800.5", "1e5", "", "-1.25", "n"],
             [" eth ", "", day, " 130 ", "", "7", "", "n"],
             ["sol", "SOL", day, ".5", "0", "5.", "+3", "n"]]
    source = _source(tmp_path, date_format)
    chunk = _first_chunk(source, lines)
    assert chunk is not None and chunk.records == 3

    fast = _fast(source, chunk)

    quotes, rejects = _careful(source, chunk)
    assert rejects == set() and fast is not None
    assert fast == quotes
    assert fast[2][0:2] == ("bitcoin", "BTC") and fast[3][0:2] == ("eth", None)


@pytest.mark.usefixtures("app_ctx")
@pytest.mark.parametrize("cell", ["0x1A", "1_000", "NaN", "2019-02-30", "1e400", "Jan 5 2019", "-0.5", "x" * 201])
def test_a_doubtful_cell_makes_postgresql_decline_the_chunk(app: Flask, tmp_path: Path, cell: str) -> None:
    row = ["bitcoin", "btc", "2019-01-05", "3800.5", "1", "1", "1", "n"]
    at = {"2019-02-30": 2, "Jan 5 2019": 2, "x" * 201: 0, "-0.5": 4}.get(cell, 3)
    row[at] = cell
    source = _source(tmp_path)
    chunk = _first_chunk(source, [["eth", "eth", "2019-01-05", "1", "1", "1", "1", "n"], row])
    assert chunk is not None

    assert _fast(source, chunk) is None
