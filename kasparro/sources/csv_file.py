"""Read quotes from a CSV file with its own column mapping, picking up only what was appended.

The cursor remembers the byte offset consumed and fingerprints of the bytes
before it. If those bytes are unchanged the file was only appended to, and
reading resumes at the offset; otherwise the file was replaced and is read
from the start (loads are idempotent, so re-reading costs time, not data).
A line is consumed only once it ends in a newline, so a writer caught
mid-line is never half-read; a last line without one is read once the file
has been still for `settle_seconds`.

A messy row never sinks the file: a row over `max_row_bytes`, a field over
`max_field_bytes`, a row that is not text in `encoding` (or holds a NUL byte),
and a quote that never closes each become one record carrying an `error`,
which the pipeline rejects with that reason while the rest loads (see
`csv_scan`). Only a header line that is not text fails the source.
"""
from __future__ import annotations

import codecs
import csv
import hashlib
import io
import os
import re
import time
from collections.abc import Container, Iterator, Mapping
from datetime import datetime
from typing import Any, BinaryIO

from kasparro.errors import SourceConfigError
from kasparro.sources import SourceContext, csv_scan, register
from kasparro.sources.base import CURSOR_SUMMARY, DEFAULT_BATCH_BYTES, Chunk, Expected, Page, Progress, RawItem
from kasparro.sources.csv_scan import Record
from kasparro.sources.filedrop import byte_limit, field_mapping, file_path, fingerprint, parse_date
from kasparro.sources.window import Window

MAX_FIELD_BYTES = 128 * 1024
MAX_ROW_BYTES = 1024 * 1024
# How much of an unreadable row the raw layer keeps, beside its hash and length.
PREFIX_BYTES = 1024
HEADER_HINT = "expected a CSV text file with a header line"
# Bytes that keep a stretch of the file out of a chunk: PostgreSQL's CSV parser could read it otherwise
# than the csv module (a quote, a byte order mark) or than str.strip (a control byte, non-ASCII space).
_NOT_PLAIN = re.compile(rb'["\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\xff]')
# A blank line (nothing but spaces, tabs and CRs) is skipped as a row: it ends a chunk too.
_BLANK = re.compile(rb"^[ \t\r]*\n", re.MULTILINE)
_PLAIN_BYTES = bytes(b for b in range(256) if not _NOT_PLAIN.match(bytes([b])))
# Where a blank line may start: at the start, or after a newline followed by one of these.
_MAY_BLANK = (b"\n\n", b"\n ", b"\n\t", b"\n\r")


def _plain_prefix(data: bytes) -> int:
    """Return where the first byte or blank line that is not plain starts in `data` (its length if none).

    The byte-level checks run in C over the whole buffer (translate, find); the regular expressions,
    several times slower, only run to locate what those found.
    """
    end = len(data)
    if data.translate(None, _PLAIN_BYTES):
        end = _NOT_PLAIN.search(data).start()  # type: ignore[union-attr]  # translate left one
    if data[:1] in (b" ", b"\t", b"\r", b"\n") or any(data.find(mark, 0, end) >= 0 for mark in _MAY_BLANK):
        blank = _BLANK.search(data, 0, end)
        if blank is not None:
            end = blank.start()
    return end


class Unreadable(Exception):
    """A row (or the header) that cannot be read, and why."""


def _where(line: int, offset: int) -> str:
    return f"line {line} at byte offset {offset}"


def _repeats(lines: list[bytes], first_line: int) -> list[int]:
    """Return the numbers of the lines that repeat an earlier one byte for byte."""
    if len(set(lines)) == len(lines):
        return []
    seen: set[bytes] = set()
    found = []
    for number, line in enumerate(lines, first_line):
        if line in seen:
            found.append(number)
        seen.add(line)
    return found


def _line_of(data: bytes, index: int, first_line: int) -> int:
    return first_line + data.count(b"\n", 0, index)


class CsvSource:
    """A CSV file of quotes, mapped to unified fields by column names."""

    kind = "csv"
    # Lines per raw chunk unless set: a chunk costs fixed work in the worker and the database (a task's
    # turn, a dozen statements, two TEMP tables), about a fifth of a 5,000-line chunk's CPU; at 20,000
    # lines (1–2 MB) that share is small, and a chunk PostgreSQL declines is still a second or two of Python.
    default_batch_size = 20_000
    # Pages and chunks close by bytes too (`max_bytes`, the run's max_batch_bytes): see `_budget`.
    cuts_by_bytes = True

    def __init__(self, name: str, spec: Mapping[str, Any], context: SourceContext) -> None:
        self.name = name
        self.label = str(spec.get("path", ""))
        self.path = file_path(spec, context.base_dir)
        self.columns = field_mapping(spec, "columns", name)
        self.date_format: str | None = spec.get("date_format")
        self.delimiter: str = spec.get("delimiter", ",")
        self.encoding: str = spec.get("encoding", "utf-8-sig")
        self.settle_seconds: float = float(spec.get("settle_seconds", 2))
        self.max_field_bytes = byte_limit(spec, "max_field_bytes", MAX_FIELD_BYTES, name)
        self.max_row_bytes = byte_limit(spec, "max_row_bytes", MAX_ROW_BYTES, name)
        try:
            codec = codecs.lookup(self.encoding).name
        except LookupError:
            raise SourceConfigError(f"unknown encoding {self.encoding!r}", source=name) from None
        self._skips_bom = codec == "utf-8-sig"
        self._utf8 = codec in ("utf-8", "utf-8-sig")  # rows may be decoded many at a time
        self._line_bytes = 128.0  # bytes per line of the last chunk read, to size the next read
        # The csv module's own limit counts characters; ours count bytes and are checked
        # around it, so lift its limit to the longest row it can be handed.
        csv.field_size_limit(max(csv.field_size_limit(), self.max_row_bytes))

    def pages(self, cursor: Mapping[str, Any] | None, page_size: int,
              max_bytes: int = DEFAULT_BATCH_BYTES) -> Iterator[Page]:
        """Yield pages of at most `page_size` rows and `max_bytes` bytes after `cursor`, each with its cursor."""
        self._budget(max_bytes)
        try:
            handle = open(self.path, "rb")
        except FileNotFoundError:
            raise SourceConfigError(f"file {self.path} not found", source=self.name) from None
        with handle:
            yield from self._read(handle, cursor, page_size, max_bytes)

    def _budget(self, max_bytes: int) -> None:
        """Refuse a batch budget smaller than a row may be: every page and chunk then fits in it."""
        for key, limit in (("max_row_bytes", self.max_row_bytes), ("max_field_bytes", self.max_field_bytes)):
            if limit > max_bytes:
                raise SourceConfigError(f"{key} {limit} is over max_batch_bytes {max_bytes}: a row must fit in a"
                                        f" batch (raise max_batch_bytes or lower {key})", source=self.name)

    def _read(self, handle: BinaryIO, cursor: Mapping[str, Any] | None, page_size: int,
              max_bytes: int) -> Iterator[Page]:
        header, header_end = self._header(handle)
        offset, line_no = self._resume_point(handle, cursor, header_end)
        size = os.fstat(handle.fileno()).st_size
        return self._pages_from(handle, header, offset, line_no, page_size, max_bytes, size, offset)

    def _pages_from(self, handle: BinaryIO, header: list[str], offset: int, line_no: int, page_size: int,
                    max_bytes: int, size: int, start: int) -> Iterator[Page]:
        """Yield pages of records; one closes at `page_size` records, or before its rows would pass `max_bytes`.

        A row is counted by the bytes it holds (an over-long row holds only its start): each is within
        max_row_bytes, which `_budget` keeps within `max_bytes`.
        """
        page: list[Record] = []
        held = 0
        for record in self._records(handle, offset, line_no):
            if record.fault is None and not record.data.strip():
                continue
            if page and held + len(record.data) > max_bytes:
                yield self._page(handle, header, page, start, size)
                page, held = [], 0
            page.append(record)
            held += len(record.data)
            if len(page) >= page_size:
                yield self._page(handle, header, page, start, size)
                page, held = [], 0
        if page:
            yield self._page(handle, header, page, start, size)

    def chunks(self, cursor: Mapping[str, Any] | None, size: int,
               max_bytes: int = DEFAULT_BATCH_BYTES) -> Iterator[Page | Chunk]:
        """Yield what follows `cursor`: plain stretches of `size` lines as chunks, anything else as pages.

        A chunk's lines, like a page's rows, close before they would pass `max_bytes` bytes.

        A chunk is kept as its bytes and parsed by PostgreSQL (`pipeline/chunks.py`). It holds only
        complete lines of ASCII text with no quote character, no control byte but tab and CR, and
        none longer than `max_field_bytes`: there the csv module and PostgreSQL's parser agree, or
        PostgreSQL refuses the chunk and it is read record by record after all. Any other stretch
        (a quoted field, a blank line, a fault) is read record by record here, as `pages` does.
        """
        self._budget(max_bytes)
        try:
            handle = open(self.path, "rb")
        except FileNotFoundError:
            raise SourceConfigError(f"file {self.path} not found", source=self.name) from None
        with handle:
            header, header_end = self._header(handle)
            handle.seek(0)
            header_bytes = handle.read(header_end)
            offset, line_no = self._resume_point(handle, cursor, header_end)
            file_size, start = os.fstat(handle.fileno()).st_size, offset
            while True:
                handle.seek(offset)
                lines, data = self._plain_lines(handle, size, max_bytes)
                if lines:
                    end, count, repeats = offset + len(data), len(lines), _repeats(lines, line_no + 1)
                    del lines  # the chunk is its bytes: the lines as objects would double what it holds
                    progress = Progress(end, max(file_size, end), "bytes", start)
                    yield Chunk(self.path.name, header_bytes, data, line_no + 1, offset, end, count, repeats,
                                self._cursor(handle, end, line_no + count), progress)
                    offset, line_no, data = end, line_no + count, b""
                    continue
                page = next(self._pages_from(handle, header, offset, line_no, size, max_bytes, file_size, start),
                            None)
                if page is None:
                    return
                yield page
                offset, line_no = page.cursor["offset"], page.cursor["line"]

    def _plain_lines(self, handle: BinaryIO, size: int, max_bytes: int) -> tuple[list[bytes], bytes]:
        """Read up to `size` lines at the handle if they make a plain chunk; [] if the next line is not plain.

        Return the lines without their newline, and their bytes with them, which hold at most `max_bytes`:
        no more is read. The bytes are read in blocks and checked a block at a time (a regular expression over
        the block finds the first byte or blank line that is not plain), so a chunk costs no Python
        work per line but the split.
        """
        if not self._utf8 or len(self.delimiter) != 1 or self.delimiter in '"\r\n':
            return [], b""
        start, data = handle.tell(), b""
        while True:
            # A guess of the chunk's bytes from the last chunk's lines, then doubling: a read or two, and
            # never past the budget, so a chunk of long lines costs its budget, not its count of lines.
            want = max(int(size * self._line_bytes * 1.05) + 1024, len(data))
            block = handle.read(min(want, max_bytes - len(data)))
            data += block
            plain_end = _plain_prefix(data)
            complete = data.rfind(b"\n", 0, plain_end) + 1
            count = min(size, data.count(b"\n", 0, complete))
            lines = data.split(b"\n", count)[:count]  # split, not sliced first: one copy of the lines
            if (len(lines) >= size or plain_end < len(data) or not block or len(data) >= max_bytes
                    or len(data) - complete > self.max_field_bytes):
                break
        if lines and max(map(len, lines)) >= self.max_field_bytes:  # each with its newline within the limit
            lines = lines[:next(n for n, line in enumerate(lines) if len(line) >= self.max_field_bytes)]
        consumed = sum(map(len, lines)) + len(lines)
        if lines:
            self._line_bytes = consumed / len(lines)
        handle.seek(start + consumed)
        return lines, data[:consumed]  # the buffer itself when every byte read was taken

    def header_names(self, header: bytes) -> list[str]:
        """Parse a chunk's header line as the file's header was parsed."""
        return self._parse(self._decode(header, 0, 1), 1, 0)

    def chunk_items(self, chunk_header: bytes, data: bytes, first_line: int, byte_start: int,
                    only: Container[int] | None = None) -> list[tuple[int, RawItem]]:
        """Read a chunk's lines record by record, exactly as `pages` reads them; return (line, item) pairs.

        A chunk holds only complete, unquoted lines, so each line is one record. `only`: read just the lines
        with these numbers (the others are not parsed at all).
        """
        header, records, offset = self.header_names(chunk_header), [], byte_start
        for number, line in enumerate(data.split(b"\n")[:-1], first_line):
            if only is None or number in only:
                records.append(Record(line + b"\n", offset, offset + len(line) + 1, number, number))
            offset += len(line) + 1
        records = [r for r in records if r.data.strip()]
        return [(r.line, item) for r, item in zip(records, self._items(header, records))]

    def _page(self, handle: BinaryIO, header: list[str], records: list[Record], start: int, size: int) -> Page:
        """Turn records into a page ending after the last, with progress in bytes since `start` of the file's `size`."""
        offset, line_no = records[-1].end, records[-1].last_line
        # The size is taken when the read began; a file appended to meanwhile tops out at 100%.
        progress = Progress(offset, max(size, offset), "bytes", start)
        return Page(self._items(header, records), self._cursor(handle, offset, line_no), progress)

    def _items(self, header: list[str], records: list[Record]) -> list[RawItem]:
        """Turn a page of records into items: plain one-line rows parsed together, the rest one by one."""
        plain = [r.fault is None and r.line == r.last_line and len(r.data) <= self.max_field_bytes for r in records]
        rows = self._parse_plain([r for r, simple in zip(records, plain) if simple])
        if rows is None:
            return [self._item(header, record) for record in records]
        found, name = iter(rows), self.path.name
        return [RawItem(self._payload(header, next(found)), f"{name}:{record.line}") if simple
                else self._item(header, record) for record, simple in zip(records, plain)]

    def _parse_plain(self, records: list[Record]) -> list[list[str]] | None:
        """Decode and parse one-line records in one pass each; None if any needs the careful, per-row path.

        Joined, the records are the same lines in the same order, and one reader over them yields what a
        reader per record does: each line ends its row, or the row counts differ and this gives up.
        """
        if not self._utf8 or not records:
            return None
        data = b"".join(record.data for record in records)
        if b"\x00" in data:
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None  # the per-row path names the bad byte and its row
        if self._skips_bom and "\ufeff" in text:
            return None  # utf-8-sig would drop a byte order mark at the start of a row
        reader = csv.reader(io.StringIO(text), delimiter=self.delimiter)
        try:
            rows = list(reader)
        except csv.Error:
            return None
        return rows if len(rows) == len(records) == reader.line_num else None

    def _header(self, handle: BinaryIO) -> tuple[list[str], int]:
        """Read the header line; fail the source if it is not text, since no row can be read without it."""
        handle.seek(0)
        data = handle.readline(self.max_row_bytes + 1)
        try:
            if len(data) > self.max_row_bytes:
                raise Unreadable(f"no line break within max_row_bytes {self.max_row_bytes}")
            return self._parse(self._decode(data, 0, 1), 1, 0), len(data)
        except Unreadable as exc:
            hint = " (set `encoding` in the source settings)" if "not valid" in str(exc) else ""
            raise SourceConfigError(f"{self.label}: {exc}; {HEADER_HINT}{hint}", source=self.name) from None

    def _resume_point(self, handle: BinaryIO, cursor: Mapping[str, Any] | None, header_end: int) -> tuple[int, int]:
        size = os.fstat(handle.fileno()).st_size
        if cursor and cursor.get("offset", 0) <= size:
            offset = int(cursor["offset"])
            if fingerprint(handle, offset) == cursor.get("fingerprint"):
                return offset, int(cursor.get("line", 1))
        return header_end, 1

    def _records(self, handle: BinaryIO, offset: int, line_no: int) -> Iterator[Record]:
        """Yield the records after `offset`, with faults marked (see `csv_scan`)."""
        settled = time.time() - os.fstat(handle.fileno()).st_mtime >= self.settle_seconds
        handle.seek(offset)
        found = csv_scan.lines(handle, offset, line_no, settled, self.max_row_bytes)
        # Encoded without a byte order mark: utf-8-sig would put one before the delimiter.
        delimiter = self.delimiter.encode("utf-8" if self._skips_bom else self.encoding)
        return csv_scan.records(found, delimiter, self.max_row_bytes, settled)

    def _item(self, header: list[str], record: Record) -> RawItem:
        """Turn a record into a payload, or into an unreadable item saying why."""
        try:
            if record.fault is not None:
                raise Unreadable(record.fault)
            text = self._decode(record.data, record.start, record.line)
            values = self._parse(text, record.line, record.start)
            self._check_fields(header, values, record)
        except Unreadable as exc:
            return self._unreadable(record, f"{self.path.name}: {exc}")
        return RawItem(self._payload(header, values), f"{self.path.name}:{record.line}")

    def _decode(self, data: bytes, start: int, line: int) -> str:
        """Decode strictly; raise Unreadable naming the first bad byte, its offset and line."""
        nul = data.find(b"\x00")
        if nul >= 0:
            raise Unreadable(f"NUL byte at offset {start + nul} (line {_line_of(data, nul, line)}),"
                             " the file looks binary here")
        try:
            return data.decode(self.encoding)
        except UnicodeDecodeError as exc:
            # utf-8-sig reports positions after the byte order mark it skipped.
            at = exc.start + (len(codecs.BOM_UTF8) if self._skips_bom and data.startswith(codecs.BOM_UTF8) else 0)
            raise Unreadable(f"byte 0x{data[at]:02x} at offset {start + at} (line {_line_of(data, at, line)})"
                             f" is not valid {self.encoding}") from None

    def _parse(self, text: str, line: int, offset: int) -> list[str]:
        try:
            rows = list(csv.reader(io.StringIO(text), delimiter=self.delimiter))
        except csv.Error as exc:
            raise Unreadable(f"{_where(line, offset)} is not CSV: {exc}") from None
        if len(rows) > 1:
            raise Unreadable(f"{_where(line, offset)} reads as {len(rows)} rows")
        return rows[0] if rows else []

    def _check_fields(self, header: list[str], values: list[str], record: Record) -> None:
        if len(record.data) <= self.max_field_bytes:
            return  # no field can be longer than its row
        for index, value in enumerate(values):
            size = len(value.encode("utf-8", "surrogatepass"))
            if size > self.max_field_bytes:
                column = header[index] if index < len(header) else "beyond the header"
                raise Unreadable(f"field {index + 1} ({column}) on {_where(record.line, record.start)} is {size}"
                                 f" bytes, over max_field_bytes {self.max_field_bytes}")

    def _unreadable(self, record: Record, reason: str) -> RawItem:
        """Keep a bounded prefix, the hash and the length of a row that cannot be read, never the row itself."""
        prefix = record.data[:PREFIX_BYTES].decode(self.encoding, "backslashreplace").replace("\x00", "\\x00")
        digest = record.digest or hashlib.sha256(record.data).hexdigest()
        payload = {"_prefix": prefix, "_sha256": digest, "_bytes": record.end - record.start}
        return RawItem(payload, f"{self.path.name}:{record.line}", error=reason)

    @staticmethod
    def _payload(header: list[str], values: list[str]) -> dict[str, Any]:
        payload: dict[str, Any] = dict(zip(header, values))
        if len(values) > len(header):
            payload["_extra"] = values[len(header):]
        return payload

    def _cursor(self, handle: BinaryIO, offset: int, line_no: int) -> dict[str, Any]:
        size = os.fstat(handle.fileno()).st_size
        return {"offset": offset, "line": line_no, "fingerprint": fingerprint(handle, offset),
                CURSOR_SUMMARY: f"{self.path.name} read to line {line_no}, byte {offset:,} of {size:,}"}

    def window_pages(self, window: Window, cursor: Mapping[str, Any] | None, page_size: int,
                     max_bytes: int = DEFAULT_BATCH_BYTES) -> Iterator[Page]:
        """Yield the rows observed in `window`, reading the file from its start (or a backfill's own cursor)."""
        for page in self.pages(cursor, page_size, max_bytes):
            items = [item for item in page.items if item.error is None and self._in_window(window, item.payload)]
            if items:
                yield Page(items, page.cursor)

    def _in_window(self, window: Window, payload: Mapping[str, Any]) -> bool:
        try:
            fields = self.to_unified(payload)
        except (KeyError, ValueError):
            return False  # a row the normal run would reject is no part of a backfill
        return window.holds(fields.get("source_asset_id"), fields.get("observed_at"))

    def expected_schema(self) -> Mapping[str, Expected]:
        """Return the configured columns: every one must be in the header, and a CSV cell is always text."""
        return {column: Expected(("string",)) for column in self.columns.values()}

    def to_unified(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Map a row to unified fields by the configured columns, parsing dates in the configured format."""
        missing = sorted(column for column in self.columns.values() if column not in payload)
        if missing:
            raise KeyError(", ".join(missing))
        fields: dict[str, Any] = {}
        for unified, column in self.columns.items():
            value = payload[column].strip() if isinstance(payload[column], str) else payload[column]
            fields[unified] = value if value != "" else None
        if self.date_format and fields.get("observed_at"):
            fields["observed_at"] = self._parse_date(fields["observed_at"])
        return fields

    def _parse_date(self, value: str) -> datetime:
        parsed = parse_date(value, self.date_format or "")
        if parsed is None:
            raise ValueError(f"observed_at: {value!r} does not match {self.date_format!r}")
        return parsed


register("csv")(CsvSource)
