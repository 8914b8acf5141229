"""Read quotes from a JSON or NDJSON file drop, streaming, with fields mapped by dotted paths into each record.

Formats (`format`): `array` is a JSON array at the top level, or inside an
object at `records_path` (dotted keys, `data.quotes`); `ndjson` is one object
per line. Left out (`auto`), a `.ndjson` or `.jsonl` file is NDJSON, and
otherwise the first byte that is not white space decides: `[` is an array, `{`
an array at `records_path` when one is set and NDJSON otherwise. Whatever the
format, a file that starts with anything but `[` or `{` is not JSON: the source fails.

Incremental loading:

* NDJSON resumes as the CSV kind does: the cursor holds the byte offset and
  line consumed and a fingerprint of the bytes before it (`filedrop`); a file
  only appended to resumes there, a replaced one is read again from the start.
  A last line without a newline is read once the file is `settle_seconds` still.
* An array cannot be appended to (its closing bracket moves), so its cursor is
  the count of elements consumed plus the whole file's size and fingerprint. An
  unchanged file resumes after that many elements (a run cut short picks up
  where it stopped); a changed one is read again from the first element, and the
  raw layer keeps each identical payload once (by content hash), so nothing
  doubles. A changed array may have moved, dropped or rewritten any element, so
  only a full re-read is sound.

Faults (see `json_scan`): a line or element that is not JSON, not an object, not
UTF-8, over `max_record_bytes` or nested deeper than `max_depth` (default 64
levels of objects and arrays, at most 512) is one reject with its reason and position
(`file:line` for NDJSON, `file:[index]` for arrays), and the rest loads. A
syntax error inside an array ends the array: the elements before it load, the
rest is one reject naming the bytes, and the source ends partial, not failed.
"""
from __future__ import annotations

import codecs
import json
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

from kasparro.errors import SourceConfigError
from kasparro.sources import SourceContext, json_scan, register
from kasparro.sources.base import (CURSOR_SUMMARY, DEFAULT_BATCH_BYTES, MAX_DEPTH, MAX_DEPTH_CEILING, Expected, Page,
                                   Progress, RawItem, expect)
from kasparro.sources.fields import FIELD_TYPES, TIME_UNITS, map_fields, read_time
from kasparro.sources.filedrop import byte_limit, field_mapping, file_path, fingerprint
from kasparro.sources.http import number_setting

FORMATS = ("auto", "array", "ndjson")
NDJSON_SUFFIXES = (".ndjson", ".jsonl")
MAX_RECORD_BYTES = 1024 * 1024


class JsonSource:
    """A JSON array or NDJSON file of quotes, mapped to unified fields by dotted paths."""

    kind = "json"
    # Pages close by bytes too (`max_bytes`, the run's max_batch_bytes): see `_chunks`.
    cuts_by_bytes = True

    def __init__(self, name: str, spec: Mapping[str, Any], context: SourceContext) -> None:
        self.name = name
        self.path = file_path(spec, context.base_dir)
        self.fields = field_mapping(spec, "fields", name)
        self.format: str = self._choice(spec, "format", "auto", FORMATS)
        self.records_path: str = str(spec.get("records_path", ""))
        self.time_unit: str | None = spec.get("time_unit")
        if self.time_unit is not None:
            self._choice(spec, "time_unit", None, tuple(TIME_UNITS))
        self.date_format: str | None = spec.get("date_format")
        self.settle_seconds: float = float(spec.get("settle_seconds", 2))
        self.max_record_bytes = byte_limit(spec, "max_record_bytes", MAX_RECORD_BYTES, name)
        self.max_depth = int(number_setting(name, spec, "max_depth", MAX_DEPTH, 1, MAX_DEPTH_CEILING))

    def _choice(self, spec: Mapping[str, Any], key: str, default: str | None, allowed: tuple[str, ...]) -> str:
        value = spec.get(key, default)
        if value not in allowed:
            raise SourceConfigError(f"{key} must be one of {', '.join(allowed)}, not {value!r}", source=self.name)
        return str(value)

    def pages(self, cursor: Mapping[str, Any] | None, page_size: int,
              max_bytes: int = DEFAULT_BATCH_BYTES) -> Iterator[Page]:
        """Yield pages of at most `page_size` records and `max_bytes` bytes after `cursor`, each with its cursor."""
        if self.max_record_bytes > max_bytes:  # else one record could pass a page's budget
            raise SourceConfigError(f"max_record_bytes {self.max_record_bytes} is over max_batch_bytes {max_bytes}:"
                                    " a record must fit in a batch (raise max_batch_bytes or lower max_record_bytes)",
                                    source=self.name)
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed by the `with` below
        except FileNotFoundError:
            raise SourceConfigError(f"file {self.path} not found", source=self.name) from None
        with handle:
            try:
                yield from self._read(handle, cursor or {}, page_size, max_bytes)
            except json_scan.NotJson as exc:
                raise SourceConfigError(f"{self.path.name}: {exc}", source=self.name) from None

    def _read(self, handle: BinaryIO, cursor: Mapping[str, Any], page_size: int, max_bytes: int) -> Iterator[Page]:
        stat = os.fstat(handle.fileno())
        settled = time.time() - stat.st_mtime >= self.settle_seconds
        if self._format(handle) == "ndjson":
            yield from self._ndjson(handle, cursor, page_size, settled, stat.st_size, max_bytes)
        else:
            yield from self._array(handle, cursor, page_size, settled, stat.st_size, max_bytes)

    def _format(self, handle: BinaryIO) -> str:
        """Tell the format by the first byte that is not white space; raise NotJson if it cannot start JSON."""
        head = handle.read(4096)
        handle.seek(0)
        first = head.removeprefix(codecs.BOM_UTF8).lstrip()[:1]
        if first and first not in b"[{":
            raise json_scan.NotJson(f"not JSON: it starts with byte 0x{first[0]:02x}, not [ or {{")
        if self.format != "auto":
            return self.format
        if self.path.suffix.lower() in NDJSON_SUFFIXES:
            return "ndjson"
        return "array" if first == b"[" or self.records_path else "ndjson"

    def _ndjson(self, handle: BinaryIO, cursor: Mapping[str, Any], page_size: int, settled: bool,
                size: int, max_bytes: int) -> Iterator[Page]:
        offset, line = 0, 0
        resumable = cursor.get("format") == "ndjson" and int(cursor.get("offset", 0)) <= size
        if resumable and fingerprint(handle, int(cursor["offset"])) == cursor.get("fingerprint"):
            offset, line = int(cursor["offset"]), int(cursor.get("line", 0))
        elements = json_scan.ndjson_lines(handle, offset, line, settled, self.max_record_bytes, self.max_depth)
        for chunk in _chunks(elements, page_size, max_bytes):
            last = chunk[-1]
            after = {"format": "ndjson", "offset": last.end, "line": last.index,
                     "fingerprint": fingerprint(handle, last.end),
                     CURSOR_SUMMARY: f"{self.path.name} read to line {last.index}, byte {last.end:,} of {size:,}"}
            progress = Progress(last.end, max(size, last.end), "bytes", offset)
            yield Page([self._item(e, f"{self.path.name}:{e.index}") for e in chunk], after, progress)

    def _array(self, handle: BinaryIO, cursor: Mapping[str, Any], page_size: int, settled: bool,
               size: int, max_bytes: int) -> Iterator[Page]:
        whole = {"size": size, **fingerprint(handle, size)}
        same = cursor.get("format") == "array" and cursor.get("file") == whole
        if same and cursor.get("broken"):
            return  # read to its syntax error already, and unchanged since
        skip = int(cursor.get("index", 0)) if same else 0
        elements = json_scan.array_elements(handle, self.records_path, self.max_record_bytes, skip, settled,
                                            self.max_depth)
        begin: int | None = None
        for chunk in _chunks(elements, page_size, max_bytes):
            # The parser has read this far (at most a buffer past the chunk's last element); counted from where
            # the first element this read took began, so elements skipped on a resume are not counted.
            reached = handle.tell()
            begin = min(chunk[0].start, reached) if begin is None else begin
            broken = chunk[-1].fault is not None and "_from_byte" in chunk[-1].evidence
            index = chunk[-1].index + (0 if broken else 1)
            note = f", stopped at a syntax error in element [{index}]" if broken else ""
            after = {"format": "array", "index": index, "file": whole, "broken": broken,
                     CURSOR_SUMMARY: f"{self.path.name}: {index:,} elements read of a {size:,}-byte file{note}"}
            progress = Progress(reached, max(size, reached), "bytes", begin)
            yield Page([self._item(e, f"{self.path.name}:[{e.index}]") for e in chunk], after, progress)

    def _item(self, element: json_scan.Element, position: str) -> RawItem:
        if element.fault is None:
            return RawItem(element.value, position)
        return RawItem(element.evidence, position, error=f"{self.path.name}: {element.fault}")

    def expected_schema(self) -> Mapping[str, Expected]:
        """Return the configured paths with the JSON types each may hold; epoch times are numbers."""
        types = {**FIELD_TYPES, "observed_at": "number|string" if self.time_unit else "string"}
        return {path: expect(types[unified]) for unified, path in self.fields.items()}

    def to_unified(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Map a record to unified fields by the configured paths; raise KeyError naming a missing path."""
        fields = map_fields(payload, self.fields)
        # An epoch in `time_unit`, a date in `date_format`, or ISO 8601 text left to validation.
        fields["observed_at"] = read_time("observed_at", fields["observed_at"],
                                          self.time_unit or self.date_format or "iso")
        return fields


def _chunks(elements: Iterator[json_scan.Element], size: int, max_bytes: int) -> Iterator[list[json_scan.Element]]:
    """Group elements into pages of `size`, each closed before its elements would pass `max_bytes`."""
    chunk: list[json_scan.Element] = []
    held = 0
    for element in elements:
        weight = _weight(element)
        if chunk and held + weight > max_bytes:
            yield chunk
            chunk, held = [], 0
        chunk.append(element)
        held += weight
        if len(chunk) >= size:
            yield chunk
            chunk, held = [], 0
    if chunk:
        yield chunk


_COMPACT = json.JSONEncoder(separators=(",", ":"))


def _weight(element: json_scan.Element) -> int:
    """Bytes an element holds: its line's length (NDJSON), else as compact JSON (an array's element, a fault).

    An array element's bytes in the file are not tracked; one that cannot be encoded again is a page of its own.
    """
    if element.fault is None and element.end > element.start:
        return element.end - element.start
    try:
        return len(_COMPACT.encode(element.value if element.fault is None else element.evidence))
    except (RecursionError, ValueError, TypeError):
        return _OWN_PAGE


_OWN_PAGE = 1 << 62


register("json")(JsonSource)
