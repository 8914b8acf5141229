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

from kasparro.sources.base import Chunk
from tests.pipeline.chunk_paths import HEADER, body, careful, csv_source, fast, first_chunk, received

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
            typed, doubtful, refused = decision.typed, decision.doubtful, decision.refused
            quotes, rejects = careful(source, chunk)
            kept_rejects = {line: reason for line, reason in rejects.items() if line in typed}
            assert kept_rejects == {}, f"PostgreSQL kept lines Python rejects: {kept_rejects}"
            assert typed == {line: quotes[line] for line in typed}
            payloads = received(source, chunk)
            assert refused == {line: (payloads[line], rejects.get(line)) for line in refused}, \
                "PostgreSQL refused a line otherwise than Python rejects it"
            assert not set(typed) & set(doubtful) and not (set(typed) | set(doubtful)) & set(refused), \
                "a line typed, left to Python or refused at once"
            assert set(typed) | set(doubtful) | set(refused) == set(quotes) | set(rejects), \
                "a line neither typed, left to Python nor refused"
            decided.append(len(typed) + len(refused))

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
    typed, doubtful = decision.typed, decision.doubtful
    assert typed == quotes and doubtful == [] and decision.refused == {}
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

    quotes, rejects = careful(source, chunk)
    assert decision is not None
    typed, doubtful = decision.typed, decision.doubtful
    # The plain lines around it are typed as Python types them; the doubtful one is left to Python, except a day
    # with a character no date in '%Y-%m-%d' holds, which PostgreSQL refuses as Python does.
    assert typed == {2: quotes[2], 4: quotes[4]}
    if cell == "Jan 5 2019":
        assert doubtful == [] and decision.refused == {3: (received(source, chunk)[3], rejects[3])}
    else:
        assert doubtful == [3] and decision.refused == {}


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


# Days in and out of the formats below, with the cells that make a payload's JSON or a value's repr hard to
# write: quotes of both kinds, a backslash, non-ASCII, a tab, a percent sign.
awkward = st.text(alphabet="ab'\"\\é\t %:-/.0123456789Z+", max_size=12)
formatted_days = st.one_of(st.sampled_from(["05/01/2019", "2019-01-05", "5/1/2019", " 05/01/2019 ", "2019/01/05 10:30",
                                            "20190105", "Jan 05 2019", "05.01.2019", "2019-01-05T10:30:00+02:00",
                                            "05/01/2019 %", "o'clock", "", "31/02/2019", "05/01/19",
                                            # strptime's %d and %I take a space before a single digit
                                            "01/ 5/2019", "201901 5", "2019-01- 5"]), awkward)
FORMATS = ["%d/%m/%Y", "%m/%d/%Y", "%Y-%m-%d", "%Y/%m/%d %H:%M", "%d.%m.%Y", "%Y%m%d", "%b %d %Y", "%Y-%m-%dT%H:%M:%S%z",
           "%d/%m/%Y %%", "%d/%m/%Y'"]
# The header's other names. Under a repeated name (a payload keeps the last cell of a name) or one with a
# quote, PostgreSQL refuses nothing: the two thirds of examples under the others have lines to compare.
HEADERS = [HEADER, [*HEADER[:-1], "50% o'clock"], [*HEADER[:-1], "coin"], [*HEADER[:-1], 'say "hi"']]
# Lines the derandomized examples below must refuse at least: 78 when written.
REFUSED_AT_LEAST = 60


@pytest.mark.usefixtures("app_ctx")
def test_a_line_postgresql_refuses_for_its_date_is_the_reject_python_makes_with_the_same_payload(
        app: Flask, tmp_path: Path) -> None:
    refused_lines: list[int] = []

    @settings(max_examples=150, deadline=None, database=None, derandomize=True)
    @given(date_format=st.sampled_from(FORMATS), header=st.sampled_from([*HEADERS[:2] * 2, *HEADERS[2:]]),
           lines=st.lists(st.tuples(plain_rows, formatted_days, st.one_of(st.just("n"), awkward)),
                          min_size=2, max_size=10))
    def agree(date_format: str, header: list[str], lines: list[tuple[list[str], str, str]]) -> None:
        source = csv_source(tmp_path, date_format)
        rows = [[*row[:2], day, *row[3:-1], note] for row, day, note in lines]
        source.path.write_text(",".join(header) + "\n" + body(rows))
        chunk = next(iter(source.chunks(None, 1000)), None)
        if not isinstance(chunk, Chunk):
            event("a quoted line first: read record by record")
            return
        note(f"{date_format!r} under {header}:\n{body(rows)}")

        decision = fast(source, chunk)

        event("decided by PostgreSQL" if decision is not None else "declined")
        if decision is None:
            return
        quotes, rejects = careful(source, chunk)
        payloads = received(source, chunk)
        assert decision.refused == {line: (payloads[line], rejects.get(line)) for line in decision.refused}
        assert set(decision.typed) | set(decision.doubtful) | set(decision.refused) == set(quotes) | set(rejects)
        refused_lines.extend(decision.refused)

    agree()
    # Many examples hold a day no date of its format can be (a dash or a letter where it has none); a refusal
    # that never happened compares nothing. The examples are the same in every run (derandomize): drawn at
    # random, 19 to 97 lines were refused in 150 of them, and a floor under that range failed now and then.
    assert len(refused_lines) >= REFUSED_AT_LEAST, f"only {len(refused_lines)} lines refused in 150 examples"


@pytest.mark.usefixtures("app_ctx")
@pytest.mark.parametrize(("date_format", "day", "refused"), [
    ("%d/%m/%Y", "2019-01-05", True),  # a dash: no day in that format has one
    ("%d/%m/%Y", "o'clock", True),  # a quote in the value: its repr takes double quotes
    ("%d/%m/%Y", "05/01/2019", False),  # it matches: read in Python, loaded
    ("%d/%m/%Y", "5/1/19", False),  # only digits and slashes: Python decides (rejected there)
    ("%m/%d/%Y", "01/ 5/2019", False),  # %d takes a space before a single digit
    ("%Y%m%d", "201901 5", False),
    ("%d/%m/%Y %%", "05/01/2019 %", False),
    ("%d/%m/%Y %%", "05/01/2019 x", True),
    ("%b %d %Y", "2019-01-05", False),  # a month's name may hold any letter: nothing is refused by its characters
])
def test_postgresql_refuses_a_day_only_when_no_day_of_the_format_holds_its_characters(
        app: Flask, tmp_path: Path, date_format: str, day: str, refused: bool) -> None:
    source = csv_source(tmp_path, date_format)
    chunk = first_chunk(source, [["eth", "eth", "2019-01-05", "1", "1", "1", "1", "n"],
                                 ["bitcoin", "btc", day, "3800.5", "1", "1", "1", "n"]])
    assert chunk is not None

    decision = fast(source, chunk)

    _, rejects = careful(source, chunk)
    if refused:
        assert decision is not None and decision.refused[3] == (received(source, chunk)[3], rejects[3])
        assert rejects[3] == {"_schema": [f"observed_at: {day!r} does not match {date_format!r}"]}
    else:  # left to Python: as doubtful, or the whole chunk when PostgreSQL decided no line of it
        assert decision is None or (3 not in decision.refused and 3 in decision.doubtful)


@pytest.mark.usefixtures("app_ctx")
@pytest.mark.parametrize("name", ["o'clock", "50%", "a:b", "x' || 'y"])
def test_a_header_name_with_sql_or_parameter_characters_is_refused_as_python_rejects(
        app: Flask, tmp_path: Path, name: str) -> None:
    source = csv_source(tmp_path, "%d/%m/%Y")
    source.path.write_text(",".join([*HEADER[:-1], name]) + "\n" + body([["eth", "eth", "2019-01-05", "1", "1", "1",
                                                                           "1", "n"]]))
    chunk = next(iter(source.chunks(None, 1000)))
    assert isinstance(chunk, Chunk)

    decision = fast(source, chunk)

    _, rejects = careful(source, chunk)
    assert decision is not None and decision.refused == {2: (received(source, chunk)[2], rejects[2])}
