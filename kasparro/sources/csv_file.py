"""Read quotes from a CSV file with its own column mapping, picking up only what was appended.

The cursor remembers the byte offset consumed and fingerprints of the bytes
before it. If those bytes are unchanged the file was only appended to, and
reading resumes at the offset; otherwise the file was replaced and is read
from the start (loads are idempotent, so re-reading costs time, not data).
A line is consumed only once it ends in a newline, so a writer caught
mid-line is never half-read; a last line without one is read once the file
has been still for `settle_seconds`.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

from kasparro.errors import SourceConfigError
from kasparro.sources import SourceContext, register
from kasparro.sources.base import UNIFIED_FIELDS, Page, RawItem

HEAD_BYTES = 64 * 1024
TAIL_BYTES = 4 * 1024
REQUIRED_COLUMNS = ("source_asset_id", "observed_at", "price_usd")


def _digest(handle: BinaryIO, start: int, end: int) -> str:
    handle.seek(start)
    return hashlib.sha256(handle.read(max(end - start, 0))).hexdigest()


def fingerprint(handle: BinaryIO, offset: int) -> dict[str, Any]:
    """Fingerprint the consumed part of a file: its head and the bytes just before `offset`."""
    head_end = min(offset, HEAD_BYTES)
    tail_start = max(offset - TAIL_BYTES, 0)
    return {"head": _digest(handle, 0, head_end), "tail": _digest(handle, tail_start, offset)}


class CsvSource:
    """A CSV file of quotes, mapped to unified fields by column names."""

    kind = "csv"

    def __init__(self, name: str, spec: Mapping[str, Any], context: SourceContext) -> None:
        self.name = name
        path = Path(spec.get("path", ""))
        self.path = path if path.is_absolute() else context.base_dir / path
        self.columns: dict[str, str] = dict(spec.get("columns", {}))
        missing = [f for f in REQUIRED_COLUMNS if f not in self.columns]
        unknown = [f for f in self.columns if f not in UNIFIED_FIELDS]
        if missing or unknown:
            raise SourceConfigError(f"column mapping: missing {missing}, unknown {unknown}", source=name)
        self.date_format: str | None = spec.get("date_format")
        self.delimiter: str = spec.get("delimiter", ",")
        self.encoding: str = spec.get("encoding", "utf-8-sig")
        self.settle_seconds: float = float(spec.get("settle_seconds", 2))

    def pages(self, cursor: Mapping[str, Any] | None, page_size: int) -> Iterator[Page]:
        """Yield pages of rows after `cursor`, each with the cursor that follows it."""
        try:
            handle = open(self.path, "rb")
        except FileNotFoundError:
            raise SourceConfigError(f"file {self.path} not found", source=self.name) from None
        with handle:
            yield from self._read(handle, cursor, page_size)

    def _read(self, handle: BinaryIO, cursor: Mapping[str, Any] | None, page_size: int) -> Iterator[Page]:
        header_line = handle.readline()
        header = self._parse(header_line)
        offset, first_line = self._resume_point(handle, cursor, len(header_line))
        handle.seek(offset)
        items: list[RawItem] = []
        line_no = first_line
        for record, end, line_no in self._records(handle, offset, first_line):
            items.append(RawItem(self._payload(header, record), f"{self.path.name}:{line_no}"))
            offset = end
            if len(items) >= page_size:
                yield Page(items, self._cursor(handle, offset, line_no))
                handle.seek(offset)
                items = []
        if items:
            yield Page(items, self._cursor(handle, offset, line_no))

    def _resume_point(self, handle: BinaryIO, cursor: Mapping[str, Any] | None, header_end: int) -> tuple[int, int]:
        size = os.fstat(handle.fileno()).st_size
        if cursor and cursor.get("offset", 0) <= size:
            offset = int(cursor["offset"])
            if fingerprint(handle, offset) == cursor.get("fingerprint"):
                return offset, int(cursor.get("line", 1))
        return header_end, 1

    def _records(self, handle: BinaryIO, offset: int, line_no: int) -> Iterator[tuple[bytes, int, int]]:
        """Yield (record bytes, offset after it, its last line number), joining quoted newlines."""
        pending = b""
        settled = time.time() - os.fstat(handle.fileno()).st_mtime >= self.settle_seconds
        for raw in iter(handle.readline, b""):
            pending += raw
            line_no += 1
            complete = raw.endswith(b"\n") or settled
            if not complete:
                return
            if pending.count(b'"') % 2:  # a quoted field goes on to the next line
                continue
            offset += len(pending)
            if pending.strip():
                yield pending, offset, line_no
            pending = b""

    def _parse(self, record: bytes) -> list[str]:
        text = record.decode(self.encoding, errors="replace")
        rows = list(csv.reader(io.StringIO(text), delimiter=self.delimiter))
        return rows[0] if rows else []

    def _payload(self, header: list[str], record: bytes) -> dict[str, Any]:
        values = self._parse(record)
        payload: dict[str, Any] = dict(zip(header, values))
        if len(values) > len(header):
            payload["_extra"] = values[len(header):]
        return payload

    def _cursor(self, handle: BinaryIO, offset: int, line_no: int) -> dict[str, Any]:
        return {"offset": offset, "line": line_no, "fingerprint": fingerprint(handle, offset)}

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


@lru_cache(maxsize=65536)
def parse_date(value: str, date_format: str) -> datetime | None:
    """Parse a date in `date_format` as UTC unless it says otherwise; None if it does not match.

    Cached: a file of daily quotes repeats each date once per coin, and strptime is slow.
    """
    try:
        parsed = datetime.strptime(value, date_format)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


register("csv")(CsvSource)
