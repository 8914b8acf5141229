"""Rows parsed a page at a time read exactly as rows parsed one by one, however messy the file."""
from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from kasparro.sources import SourceContext, build_source
from kasparro.sources.base import Chunk, RawItem

COLUMNS = {"source_asset_id": "currency", "observed_at": "date", "price_usd": "close"}
HEADER = b"currency,date,close\n"
# Pieces of rows that stress each careful-path rule: quotes, line breaks inside and outside quotes,
# carriage returns, NUL, byte order marks, bytes that are not UTF-8, long fields and extra cells.
CELLS = st.sampled_from([b"bitcoin", b"2019-04-20", b"5296.23", b"", b'"quoted, comma"', b'"a ""b"" c"',
                         b'"two\nlines"', b'"open', b'x"y', b"\r", b"a\rb", b"\x00", b"\xef\xbb\xbf", b"\xff",
                         b"caf\xc3\xa9", b"\xc3", b" ", b"z" * 70, b"\t"])
ROWS = st.lists(CELLS, min_size=0, max_size=5).map(lambda cells: b",".join(cells))
ENDINGS = st.sampled_from([b"\n", b"\r\n", b"\n\n"])
FILES = st.lists(st.tuples(ROWS, ENDINGS), max_size=25)


def _body(rows: list[tuple[bytes, bytes]], last_newline: bool) -> bytes:
    """The file after its header: the rows with their endings, maybe without the last newline."""
    body = b"".join(row + ending for row, ending in rows)
    return body if last_newline or not body.endswith(b"\n") else body.rstrip(b"\n")


def read(path: Path, careful: bool, page_size: int, encoding: str) -> list[list[RawItem]]:
    spec = {"kind": "csv", "path": str(path), "columns": COLUMNS, "settle_seconds": 0, "encoding": encoding,
            "max_field_bytes": 64, "max_row_bytes": 256}
    source = build_source("prices", spec, SourceContext())
    if careful:
        source._utf8 = False  # the per-row path, which every row took before pages were parsed together
    return [page.items for page in source.pages(None, page_size)]


@settings(max_examples=300, deadline=None)
@given(FILES, st.booleans(), st.integers(1, 7), st.sampled_from(["utf-8-sig", "utf-8"]))
def test_pages_parsed_together_equal_rows_parsed_one_by_one(rows: list[tuple[bytes, bytes]], last_newline: bool,
                                                             page_size: int, encoding: str) -> None:
    body = _body(rows, last_newline)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.csv"
        path.write_bytes(HEADER + body)

        fast = read(path, careful=False, page_size=page_size, encoding=encoding)
        careful = read(path, careful=True, page_size=page_size, encoding=encoding)

    assert fast == careful


def test_a_plain_page_takes_the_fast_path(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes(HEADER + b"bitcoin,2019-04-20,5296.23\nethereum,2019-04-20,174.26,extra\n")
    spec = {"kind": "csv", "path": str(path), "columns": COLUMNS, "settle_seconds": 0}
    source = build_source("prices", spec, SourceContext())
    with open(path, "rb") as handle:
        records = list(source._records(handle, len(HEADER), 1))

    assert source._parse_plain(records) == [["bitcoin", "2019-04-20", "5296.23"],
                                            ["ethereum", "2019-04-20", "174.26", "extra"]]
    (page,) = source.pages(None, 10)
    assert page.items[1].payload == {"currency": "ethereum", "date": "2019-04-20", "close": "174.26",
                                     "_extra": ["extra"]}


def _as_chunks(path: Path, size: int, encoding: str) -> list[RawItem]:
    spec = {"kind": "csv", "path": str(path), "columns": COLUMNS, "settle_seconds": 0, "encoding": encoding,
            "max_field_bytes": 64, "max_row_bytes": 256}
    source = build_source("prices", spec, SourceContext())
    items, offset = [], len(HEADER)
    for part in source.chunks(None, size):
        if isinstance(part, Chunk):
            assert part.byte_start == offset and part.byte_end == offset + len(part.data)
            assert 0 < part.records <= size and part.data.count(b"\n") == part.records
            lines = part.data.split(b"\n")[:-1]
            assert all(line.strip() and len(line) < 64 and b'"' not in line for line in lines)
            items += [item for _, item in source.chunk_items(part.header, part.data, part.first_line,
                                                              part.byte_start)]
            offset = part.byte_end
        else:
            items += part.items
            offset = part.cursor["offset"]
    return items


@settings(max_examples=300, deadline=None)
@given(FILES, st.booleans(), st.integers(1, 7), st.sampled_from(["utf-8-sig", "utf-8"]))
# A line of nothing but spaces (or tabs, or a CR), which a chunk must end before.
@example([(b"bitcoin", b"\n"), (b" ", b"\n"), (b"x", b"\n")], True, 3, "utf-8")
@example([(b"bitcoin", b"\n"), (b"\t", b"\n"), (b"x", b"\n")], True, 3, "utf-8")
@example([(b"bitcoin", b"\n"), (b"\r", b"\n"), (b"x", b"\n")], True, 3, "utf-8")
def test_a_file_read_as_chunks_gives_every_record_pages_give_once_and_in_order(
        rows: list[tuple[bytes, bytes]], last_newline: bool, size: int, encoding: str) -> None:
    body = _body(rows, last_newline)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.csv"
        path.write_bytes(HEADER + body)

        chunked = _as_chunks(path, size, encoding)
        paged = [item for items in read(path, careful=False, page_size=size, encoding=encoding) for item in items]

    lines = [int(item.position.split(":")[1]) for item in chunked]
    assert lines == sorted(set(lines))  # nothing read twice, in file order
    if b'"' not in body:
        assert chunked == paged
    # With a quote, a chunked read restarts the record scan where a plain stretch resumes (as a later run
    # does at its cursor), while one pages read carries on: after a quote that never closes, the two may
    # cut records apart differently. Each keeps every byte (the chunks' ranges are contiguous above).
