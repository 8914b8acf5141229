"""The CSV source: column mapping, and reading only what was appended since its cursor."""
from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from kasparro.errors import SourceConfigError
from kasparro.sources import SourceContext, build_source
from kasparro.sources.base import Page

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
