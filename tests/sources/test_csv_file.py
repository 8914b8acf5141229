"""The CSV source: column mapping, and reading only what was appended since its cursor."""
from __future__ import annotations

import hashlib
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from kasparro.errors import SourceConfigError
from kasparro.sources import SourceContext, build_source
from kasparro.sources.base import Page, Progress

COLUMNS = {"source_asset_id": "currency", "observed_at": "date", "price_usd": "close"}


def make_source(path: Path, **settings: object):
    spec = {"kind": "csv", "path": str(path), "columns": COLUMNS, "settle_seconds": 0, **settings}
    return build_source("prices", spec, SourceContext())


def read_all(source, cursor=None, page_size: int = 100) -> list[Page]:
    return list(source.pages(cursor, page_size))


def test_rows_come_back_as_received_with_their_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("currency,date,close\nbitcoin,2019-04-20,5296.23\nethereum,2019-04-20,174.26\n")

    (page,) = read_all(make_source(path))

    assert [i.payload for i in page.items] == [
        {"currency": "bitcoin", "date": "2019-04-20", "close": "5296.23"},
        {"currency": "ethereum", "date": "2019-04-20", "close": "174.26"},
    ]
    assert [i.position for i in page.items] == ["p.csv:2", "p.csv:3"]


def test_pages_are_cut_at_the_page_size_each_with_its_own_cursor(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("currency,date,close\n" + "".join(f"c{i},2019-04-20,{i}\n" for i in range(5)))

    pages = read_all(make_source(path), page_size=2)

    assert [len(p.items) for p in pages] == [2, 2, 1]
    assert [p.cursor["line"] for p in pages] == [3, 5, 6]
    assert pages[-1].cursor["offset"] == path.stat().st_size


def test_each_page_says_how_many_bytes_of_the_file_are_read_since_the_cursor(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    header = "currency,date,close\n"
    path.write_text(header + "".join(f"c{i},2019-04-20,{i}\n" for i in range(4)))
    (first,) = read_all(make_source(path), page_size=10)
    with path.open("a") as handle:
        handle.write("".join(f"d{i},2019-04-21,{i}\n" for i in range(4)))
    size = path.stat().st_size

    pages = read_all(make_source(path), first.cursor, page_size=2)

    start = first.cursor["offset"]
    assert first.progress == Progress(start, start, "bytes", len(header))
    assert [(p.progress.done, p.progress.total, p.progress.start) for p in pages] == [
        (pages[0].cursor["offset"], size, start), (size, size, start)]


def test_reading_from_the_last_cursor_yields_only_appended_rows(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("currency,date,close\nbitcoin,2019-04-20,5296.23\n")
    source = make_source(path)
    (first,) = read_all(source)
    with path.open("a") as handle:
        handle.write("bitcoin,2019-04-21,5268.29\n")

    (second,) = read_all(source, first.cursor)

    assert [i.payload["date"] for i in second.items] == ["2019-04-21"]
    assert second.items[0].position == "p.csv:3"
    assert read_all(source, second.cursor) == []


def test_a_rewritten_file_is_read_again_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("currency,date,close\nbitcoin,2019-04-20,5296.23\n")
    source = make_source(path)
    (first,) = read_all(source)
    path.write_text("currency,date,close\nbitcoin,2019-04-20,5300.00\nbitcoin,2019-04-21,5268.29\n")

    (again,) = read_all(source, first.cursor)

    assert [i.payload["close"] for i in again.items] == ["5300.00", "5268.29"]


def test_a_line_still_being_written_is_left_for_later(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("currency,date,close\nbitcoin,2019-04-20,5296.23\nbitcoin,2019-04-21,52")
    source = make_source(path, settle_seconds=60)

    (page,) = read_all(source)

    assert [i.payload["date"] for i in page.items] == ["2019-04-20"]
    with path.open("a") as handle:
        handle.write("68.29\n")
    (rest,) = read_all(source, page.cursor)
    assert rest.items[0].payload == {"currency": "bitcoin", "date": "2019-04-21", "close": "5268.29"}


def test_a_last_line_without_newline_is_read_once_the_file_is_still(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("currency,date,close\nbitcoin,2019-04-20,5296.23")
    old = time.time() - 120
    os.utime(path, (old, old))

    (page,) = read_all(make_source(path, settle_seconds=60))

    assert page.items[0].payload["close"] == "5296.23"


def test_quoted_fields_may_hold_newlines_and_commas(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text('currency,date,close\n"bit\ncoin, the first",2019-04-20,5296.23\n')

    (page,) = read_all(make_source(path))

    assert page.items[0].payload["currency"] == "bit\ncoin, the first"


def test_a_byte_order_mark_and_crlf_endings_are_handled(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes("\ufeffcurrency,date,close\r\nbitcoin,2019-04-20,5296.23\r\n".encode())

    (page,) = read_all(make_source(path))

    assert page.items[0].payload == {"currency": "bitcoin", "date": "2019-04-20", "close": "5296.23"}


def test_the_mapping_renames_columns_and_parses_the_configured_date_format(tmp_path: Path) -> None:
    source = make_source(tmp_path / "p.csv", date_format="%d-%m-%Y %H:%M:%S")

    fields = source.to_unified({"currency": "bitcoin", "date": "24-04-2019 13:05:00", "close": " 5296.23 "})

    assert fields == {"source_asset_id": "bitcoin", "observed_at": datetime(2019, 4, 24, 13, 5, tzinfo=timezone.utc),
                      "price_usd": "5296.23"}


def test_a_mapping_without_the_required_columns_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceConfigError, match="missing \\['price_usd'\\]"):
        build_source("bad", {"kind": "csv", "path": "x.csv",
                             "columns": {"source_asset_id": "a", "observed_at": "b"}}, SourceContext())


def test_a_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(SourceConfigError, match="not found"):
        read_all(make_source(tmp_path / "nope.csv"))


# Messy files: every row-level fault is one item with an `error`, and the rest still reads.

def rows(pages: list[Page]) -> list:
    return [item for page in pages for item in page.items]


def test_exact_duplicate_lines_are_each_read_for_extract_to_count(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("currency,date,close\nbitcoin,2019-04-20,1\nbitcoin,2019-04-20,1\n")

    first, second = rows(read_all(make_source(path)))

    assert first.payload == second.payload and (first.position, second.position) == ("p.csv:2", "p.csv:3")
    assert first.error is None and second.error is None


def test_a_field_over_max_field_bytes_is_one_unreadable_row(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("currency,date,close\nbitcoin,2019-04-20," + "9" * 200_000 + "\nethereum,2019-04-20,2\n")

    big, good = rows(read_all(make_source(path)))

    assert big.error == ("p.csv: field 3 (close) on line 2 at byte offset 20 is 200000 bytes,"
                         " over max_field_bytes 131072")
    assert big.position == "p.csv:2" and big.payload["_bytes"] == 200_020
    assert good.payload == {"currency": "ethereum", "date": "2019-04-20", "close": "2"}


def test_max_field_bytes_is_configurable(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("currency,date,close\nbtc,2019-04-20,12345678901\n")

    (item,) = rows(read_all(make_source(path, max_field_bytes=10)))

    assert item.error == "p.csv: field 3 (close) on line 2 at byte offset 20 is 11 bytes, over max_field_bytes 10"


def test_a_row_over_max_row_bytes_keeps_only_a_prefix_its_hash_and_length(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    huge = ("bitcoin,2019-04-20," + ",".join(["7" * 100] * 30_000)).encode()
    path.write_bytes(b"currency,date,close\n" + huge + b"\nethereum,2019-04-20,2\n")

    big, good = rows(read_all(make_source(path)))

    assert big.error == f"p.csv: row on line 2 at byte offset 20 is {len(huge) + 1} bytes, over max_row_bytes 1048576"
    assert big.payload == {"_prefix": huge[:1024].decode(), "_sha256": hashlib.sha256(huge + b"\n").hexdigest(),
                           "_bytes": len(huge) + 1}
    assert good.payload["currency"] == "ethereum" and good.position == "p.csv:3"


def test_max_row_bytes_is_configurable_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("currency,date,close\nbitcoin,2019-04-20,12\n")

    (item,) = rows(read_all(make_source(path, max_row_bytes=21)))

    assert item.error == "p.csv: row on line 2 at byte offset 20 is 22 bytes, over max_row_bytes 21"
    with pytest.raises(SourceConfigError, match="no line break within max_row_bytes 19"):
        read_all(make_source(path, max_row_bytes=19))
    for bad in (0, -1, "big", True):
        with pytest.raises(SourceConfigError, match="max_row_bytes must be a positive"):
            make_source(path, max_row_bytes=bad)


def test_an_unclosed_quote_in_a_settled_file_rejects_its_line_and_reads_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text('currency,date,close\nbitcoin,2019-04-20,1\n"ripple,2019-04-20,2\n'
                    "ethereum,2019-04-20,3\ntether,2019-04-20,4\n")

    good, stray, *rest = rows(read_all(make_source(path)))

    assert stray.error == "p.csv: unclosed quote opened on line 3 at byte offset 41"
    assert stray.payload["_prefix"] == '"ripple,2019-04-20,2\n' and stray.position == "p.csv:3"
    assert [(i.position, i.payload["currency"], i.error) for i in [good, *rest]] == [
        ("p.csv:2", "bitcoin", None), ("p.csv:4", "ethereum", None), ("p.csv:5", "tether", None)]


def test_an_unclosed_quote_in_a_file_still_being_written_waits(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text('currency,date,close\nbitcoin,2019-04-20,1\n"rip\nple",2019-04-20,')
    source = make_source(path, settle_seconds=60)

    (page,) = read_all(source)

    assert [i.payload["currency"] for i in page.items] == ["bitcoin"]
    assert page.cursor["line"] == 2
    with path.open("a") as handle:
        handle.write("2\n")
    (rest,) = read_all(source, page.cursor)
    assert rest.items[0].payload == {"currency": "rip\nple", "date": "2019-04-20", "close": "2"}
    assert rest.items[0].position == "p.csv:3" and rest.cursor["line"] == 4


def test_a_stray_quote_running_past_max_row_bytes_is_rejected_and_later_rows_load(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    good = [f"coin{i},2019-04-20,{i}\n" for i in range(20)]
    path.write_text("currency,date,close\n" + '"stray,2019-04-20,1\n' + "".join(good))

    pages = read_all(make_source(path, max_row_bytes=100), page_size=3)
    items = rows(pages)

    assert items[0].error == "p.csv: unclosed quote opened on line 2 at byte offset 20"
    assert [i.payload["currency"] for i in items[1:]] == [f"coin{i}" for i in range(20)]
    assert [i.position for i in items[1:]] == [f"p.csv:{n}" for n in range(3, 23)]
    assert pages[-1].cursor["offset"] == path.stat().st_size and pages[-1].cursor["line"] == 22


def test_reading_resumes_after_a_page_cut_inside_the_lines_read_again(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("currency,date,close\n" + '"stray,2019-04-20,1\n' + "".join(f"c{i},d,{i}\n" for i in range(9)))
    source = make_source(path, max_row_bytes=40)

    first, *_ = read_all(source, page_size=2)
    rest = rows(read_all(source, first.cursor, page_size=2))

    assert [i.payload["currency"] for i in first.items[1:] + rest] == [f"c{i}" for i in range(9)]


def test_a_quote_inside_an_unquoted_field_is_a_literal_and_does_not_join_lines(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text('currency,date,close\nbit"coin,2019-04-20,1\nethereum,2019-04-20,2\n')

    first, second = rows(read_all(make_source(path)))

    assert first.payload["currency"] == 'bit"coin' and second.payload["currency"] == "ethereum"


def test_a_quoted_field_with_doubled_quotes_and_newlines_is_one_record(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes(b'currency,date,close\r\n"say ""hi"",\r\nthere",2019-04-20,1\r\nx,2019-04-20,2\r\n')

    first, second = rows(read_all(make_source(path)))

    assert first.payload["currency"] == 'say "hi",\r\nthere' and second.position == "p.csv:4"


def test_a_quoted_newline_in_a_later_column_joins_lines(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text('currency,date,close\nbitcoin,"2019-04-20\nnoon",1\nethereum,2019-04-20,"2\n"\n')

    first, second = rows(read_all(make_source(path)))

    assert (first.payload["date"], second.payload["close"]) == ("2019-04-20\nnoon", "2\n")
    assert (first.position, second.position) == ("p.csv:2", "p.csv:4")


def test_a_binary_file_fails_the_source_naming_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")

    with pytest.raises(SourceConfigError) as failure:
        read_all(make_source(path))

    assert str(failure.value).endswith(f"{path}: byte 0x89 at offset 0 (line 1) is not valid utf-8-sig; expected a"
                                       " CSV text file with a header line (set `encoding` in the source settings)")


def test_a_nul_in_the_header_fails_the_source_as_binary(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"currency,da\x00te,close\nbitcoin,2019-04-20,1\n")

    with pytest.raises(SourceConfigError, match="NUL byte at offset 11 \\(line 1\\), the file looks binary"):
        read_all(make_source(path))


def test_an_undecodable_row_is_rejected_naming_line_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes("\ufeffcurrency,date,close\r\nbitcoin,2019-04-20,1\r\nbit\xffcoin,2019-04-21,2\r\n"
                     "ethereum,2019-04-20,3\r\n".encode("utf-8", "surrogateescape").replace(b"\xc3\xbf", b"\xff"))

    good, bad, last = rows(read_all(make_source(path)))

    assert bad.error == "p.csv: byte 0xff at offset 49 (line 3) is not valid utf-8-sig"
    assert bad.payload["_prefix"] == "bit\\xffcoin,2019-04-21,2\r\n"
    assert (good.payload["currency"], last.payload["currency"]) == ("bitcoin", "ethereum")


def test_a_nul_in_a_row_is_rejected_and_the_rest_reads(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes(b"currency,date,close\nbit\x00coin,2019-04-20,1\nethereum,2019-04-20,3\n")

    bad, good = rows(read_all(make_source(path)))

    assert bad.error == "p.csv: NUL byte at offset 23 (line 2), the file looks binary here"
    assert bad.payload["_prefix"] == "bit\\x00coin,2019-04-20,1\n" and good.error is None


def test_a_row_the_csv_module_refuses_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes(b"currency,date,close\nbit\rcoin,2019-04-20,1\nethereum,2019-04-20,3\n")

    bad, good = rows(read_all(make_source(path)))

    assert bad.error.startswith("p.csv: line 2 at byte offset 20 is not CSV: new-line character")
    assert good.error is None


def test_the_line_that_runs_a_stray_quote_past_the_limit_is_read_afresh(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text('currency,date,close\n"stray,2019-04-20,1\n' + "a,b,c\n" * 10 + 'x,"multi\nline",3\n')

    items = rows(read_all(make_source(path, max_row_bytes=80)))

    assert items[0].error == "p.csv: unclosed quote opened on line 2 at byte offset 20"
    assert [i.payload["currency"] for i in items[1:-1]] == ["a"] * 10
    assert items[-1].payload == {"currency": "x", "date": "multi\nline", "close": "3"}


def test_a_stray_quote_then_a_line_over_the_limit_rejects_both(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text('currency,date,close\n"stray,2019-04-20,1\na,b,c\n' + "z" * 100 + "\nd,e,f\n")

    stray, good, long, last = rows(read_all(make_source(path, max_row_bytes=80)))

    assert "unclosed quote opened on line 2" in stray.error and "row on line 4" in long.error
    assert (good.payload["currency"], last.payload["currency"]) == ("a", "d")


def test_a_long_last_line_still_being_written_waits_and_is_rejected_once_still(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("currency,date,close\na,b,c\n" + "z" * 100)

    (waiting,) = read_all(make_source(path, max_row_bytes=80, settle_seconds=60))
    old = time.time() - 120
    os.utime(path, (old, old))
    (still,) = read_all(make_source(path, max_row_bytes=80, settle_seconds=60), waiting.cursor)

    assert [i.payload["currency"] for i in waiting.items] == ["a"]
    assert still.items[0].error == "p.csv: row on line 3 at byte offset 26 is 100 bytes, over max_row_bytes 80"
