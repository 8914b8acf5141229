"""PostgreSQL reading a raw chunk agrees with the CSV source reading it line by line in Python.

The fast path (`chunks._parse_and_type`, statements from `chunk_sql`) may decline a chunk; whenever
it decides one, every line is either typed by PostgreSQL, as a quote with exactly the values the careful
path (the CSV source's own parser, then `validation.load_quote`) gives it, or left to Python as doubtful:
none is lost, none is both. Messy cells are generated, not hand-picked.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

from tests.pipeline.chunk_paths import body, careful, csv_source, fast, first_chunk

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


# A plain day with one or two characters changed to a digit or a dash: PostgreSQL's date input reads stray
# dashes that strptime refuses ("2019--1-05" is 5 January 2019 to it), so half the changes are to a dash.
near_days = st.builds(lambda day, edits: "".join(edits.get(i, c) for i, c in enumerate(day)),
                      st.sampled_from(["2019-01-05", "2020-02-29", "2021-12-31"]),
                      st.dictionaries(st.integers(0, 9), st.one_of(st.just("-"), st.sampled_from("0123456789")),
                                      min_size=1, max_size=2))
# Plain rows, the last with a near-miss day: if the fast path reads that day, it decides the chunk.
near_chunks = st.tuples(st.lists(plain_rows, min_size=1, max_size=6), plain_rows, near_days).map(
    lambda drawn: [*drawn[0], [*drawn[1][:2], drawn[2], *drawn[1][3:]]])


@st.composite
def rows(draw: Any) -> list[str]:
    if draw(st.integers(0, 9)) < 7:
        return draw(good_rows)
    cells = [draw(ids), draw(tickers), draw(days), draw(numbers), draw(numbers), draw(numbers), draw(numbers), "n"]
    if draw(st.integers(0, 9)) == 0:  # now and then a row with a cell too many or too few
        cells = cells + ["extra"] if draw(st.booleans()) else cells[:-2]
    return cells


@pytest.mark.usefixtures("app_ctx")
def test_whenever_postgresql_decides_a_chunk_it_keeps_what_python_keeps(app: Flask, tmp_path: Path) -> None:
    decided: list[int] = []  # lines of each example PostgreSQL decided, so declining them all cannot pass

    @settings(max_examples=150, deadline=None, database=None)
    @given(lines=st.one_of(st.lists(rows(), min_size=1, max_size=12), st.lists(plain_rows, min_size=2, max_size=12),
                           near_chunks))
    def agree(lines: list[list[str]]) -> None:
        source = csv_source(tmp_path)
        chunk = first_chunk(source, lines)
        if chunk is None:
            return  # not a plain stretch (a blank line): read record by record, never by PostgreSQL
        # The chunk as written, so a failure shows the lines it is about (line 2 is the first after the header).
        note(f"chunk:\n{body(lines)}")

        decision = fast(source, chunk)

        event("decided by PostgreSQL" if decision is not None else "declined")
        if decision is not None:
            typed, doubtful = decision
            quotes, rejects = careful(source, chunk)
            kept_rejects = {line: reason for line, reason in rejects.items() if line in typed}
            assert kept_rejects == {}, f"PostgreSQL kept lines Python rejects: {kept_rejects}"
            assert typed == {line: quotes[line] for line in typed}
            assert not set(typed) & set(doubtful), "a line both typed and left to Python"
            assert set(typed) | set(doubtful) == set(quotes) | set(rejects), "a line neither typed nor left to Python"
            decided.append(len(typed))

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
    source = csv_source(tmp_path, date_format)
    chunk = first_chunk(source, lines)
    assert chunk is not None and chunk.records == 3

    decision = fast(source, chunk)

    quotes, rejects = careful(source, chunk)
    assert rejects == {} and decision is not None
    typed, doubtful = decision
    assert typed == quotes and doubtful == []
    assert typed[2][0:2] == ("bitcoin", "BTC") and typed[3][0:2] == ("eth", None)


DOUBTFUL_CELLS = {"0x1A": 3, "1_000": 3, "NaN": 3, "1e400": 3, "Jan 5 2019": 2, "-0.5": 4, "x" * 201: 0}


@pytest.mark.usefixtures("app_ctx")
@pytest.mark.parametrize("cell", list(DOUBTFUL_CELLS))
def test_a_cell_outside_the_plain_shapes_leaves_its_line_to_python(app: Flask, tmp_path: Path, cell: str) -> None:
    row = ["bitcoin", "btc", "2019-01-05", "3800.5", "1", "1", "1", "n"]
    row[DOUBTFUL_CELLS[cell]] = cell
    source = csv_source(tmp_path)
    plain = [["eth", "eth", "2019-01-05", "1", "1", "1", "1", "n"], ["sol", "sol", "2019-01-05", "2", "", "", "", "n"]]
    chunk = first_chunk(source, [plain[0], row, plain[1]])
    assert chunk is not None

    decision = fast(source, chunk)

    quotes, _ = careful(source, chunk)
    assert decision is not None
    typed, doubtful = decision
    # The plain lines around it are typed as Python types them; the doubtful one is left to Python.
    assert typed == {2: quotes[2], 4: quotes[4]} and doubtful == [3]


@pytest.mark.usefixtures("app_ctx")
@pytest.mark.parametrize("cell", ["2019-02-30", "1e", "1.2.3"])
def test_a_cell_of_a_plain_shape_whose_cast_fails_makes_postgresql_decline_the_chunk(app: Flask, tmp_path: Path,
                                                                                      cell: str) -> None:
    row = ["bitcoin", "btc", "2019-01-05", "3800.5", "1", "1", "1", "n"]
    row[2 if cell.startswith("2019") else 3] = cell
    source = csv_source(tmp_path)
    chunk = first_chunk(source, [["eth", "eth", "2019-01-05", "1", "1", "1", "1", "n"], row])
    assert chunk is not None

    assert fast(source, chunk) is None
