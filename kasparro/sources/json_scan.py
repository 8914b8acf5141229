"""Cut a JSON array or an NDJSON file into elements, streaming, and mark each one that cannot be read.

Neither reader holds more than one element (bounded by `limit` bytes and
`max_depth` levels of nesting) and one read chunk in memory, however large or
deep the file. The array reader takes ijson's events without their path
prefixes (a prefix is rebuilt per event, so its cost grows with the square of
the depth: 20 KB of `[[[…]]]` took 272 MiB) and tracks the path itself.

| fault                                   | NDJSON                         | array                                 |
|-----------------------------------------|--------------------------------|---------------------------------------|
| not JSON / a syntax error               | that line is marked            | everything from there on is one fault |
| not valid UTF-8                         | that line is marked            | as a syntax error                     |
| an element that is not an object        | that line is marked            | that element is marked                |
| an element over `limit` bytes           | read through, hashed, marked   | read through, not built, marked       |
| an element nested deeper than max_depth | that line is marked            | read through, not built, marked       |
| a lone UTF-16 surrogate escape          | rejected by the raw layer      | that element is marked                |
| a number out of float range (1e400)     | rejected by the raw layer      | as a syntax error                     |

A syntax error inside an array cannot be resynchronised reliably (a brace in a
string looks like structure), so the array reader stops there: what came before
stands, and the rest of the file is one fault naming the bytes it lies in.
"""
from __future__ import annotations

import codecs
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import ijson

from kasparro.sources import csv_scan
from kasparro.sources.base import MAX_DEPTH, TooDeep, loads_json

# Small reads: a syntax error is located to within one chunk.
CHUNK = 8 * 1024
# How much of an unreadable record the raw layer keeps, beside its hash and length.
PREFIX_BYTES = 1024
_STARTS, _ENDS = ("start_map", "start_array"), ("end_map", "end_array")


class NotJson(Exception):
    """The file cannot be read as JSON at all: nothing in it can be loaded."""


@dataclass(frozen=True)
class Element:
    """One element and where it lies, or, when `fault` is set, why it cannot be read and what identifies it."""

    value: Any
    index: int
    start: int
    end: int
    fault: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


def _evidence(data: bytes, digest: str = "", size: int | None = None) -> dict[str, Any]:
    prefix = data[:PREFIX_BYTES].decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
    return {"_prefix": prefix, "_sha256": digest or hashlib.sha256(data).hexdigest(),
            "_bytes": len(data) if size is None else size}


def _not_object(value: Any) -> str | None:
    return None if isinstance(value, dict) else f"is {_json_type(value)}, not an object"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", str: "a string", list: "an array", dict: "an object"}
    return names.get(type(value), "a number")


def ndjson_lines(handle: BinaryIO, offset: int, line_no: int, settled: bool, limit: int,
                 max_depth: int = MAX_DEPTH) -> Iterator[Element]:
    """Yield one element per non-blank line after `offset`; a last line without a newline only once `settled`."""
    handle.seek(offset)
    for line in csv_scan.lines(handle, offset, line_no, settled, limit):
        where = f"line {line.number} at byte offset {line.start}"
        if line.oversize:
            fault = f"{where} is {line.size} bytes, over max_record_bytes {limit}"
            yield Element(None, line.number, line.start, line.start + line.size, fault,
                          _evidence(line.data, line.digest, line.size))
            continue
        data = line.data.removeprefix(codecs.BOM_UTF8) if line.start == 0 else line.data
        if data.strip():
            yield _ndjson_element(data, line.number, line.start, line.size, where, max_depth)


def _ndjson_element(data: bytes, number: int, start: int, size: int, where: str, max_depth: int) -> Element:
    try:
        value = loads_json(data.decode("utf-8"), max_depth)
    except TooDeep as exc:
        fault = f"{where} {exc}"
    except UnicodeDecodeError as exc:
        fault = f"byte 0x{data[exc.start]:02x} at offset {start + exc.start} (line {number}) is not valid UTF-8"
    except json.JSONDecodeError as exc:
        fault = f"{where} is not JSON: {exc.msg} at column {exc.colno}"
    else:
        fault = _not_object(value)
        if fault is None:
            return Element(value, number, start, start + size)
        fault = f"{where} {fault}"
    return Element(None, number, start, start + size, fault, _evidence(data))


# ijson's parser turns a lone high surrogate escape into "?" and fails on a lone low one, so the reader
# rewrites each lone escape to one of the same length for a noncharacter, which _feed recognises (an
# element holding that noncharacter itself, which no text should, is refused the same way).
LONE_MARK = "\ufdd0"
_ESCAPE_TOKENS = re.compile(rb"\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
                            rb"|\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_MARK_ESCAPE = LONE_MARK.encode("unicode_escape")
# The longest token (a surrogate pair's two escapes): a read holds back that much, so no token is cut in two.
_LONGEST_TOKEN = 12


class _Counted:
    """A reader that hands the parser small chunks, remembers how far it has read, and marks lone surrogates."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.read_to = handle.tell()
        self.chunk_start = self.read_to
        self.held = b""

    def read(self, size: int) -> bytes:
        data = self.held
        while True:
            more = self.handle.read(min(size, CHUNK))
            data += more
            cut = len(data) if not more else self._safe_cut(data)
            if cut or not more:
                break
        self.held = data[cut:]
        data = _ESCAPE_TOKENS.sub(self._mark, data[:cut]) if b"\\u" in data[:cut] else data[:cut]
        self.chunk_start, self.read_to = self.read_to, self.read_to + len(data)
        return data

    def _safe_cut(self, data: bytes) -> int:
        """Return where to stop this read: past every whole token, and at least a token short of the end."""
        cut = len(data) - _LONGEST_TOKEN
        if b"\\" not in data[-2 * _LONGEST_TOKEN:]:
            return max(cut, 0)  # no token can span the cut
        # Read the tokens from the start: a backslash's meaning depends on the ones before it.
        for match in _ESCAPE_TOKENS.finditer(data):
            if match.start() >= cut:
                break
            cut = max(cut, match.end())
        return max(cut, 0)

    @staticmethod
    def _mark(match: re.Match[bytes]) -> bytes:
        token = match.group()
        return token if len(token) != 6 else _MARK_ESCAPE


@dataclass
class _Building:
    """The element being parsed: its builder (None once it is over a limit or skipped) and its size so far."""

    index: int
    start: int
    builder: ijson.ObjectBuilder | None
    depth: int = 0
    size: int = 0
    too_deep: bool = False
    lone: bool = False


class _Path:
    """Where the parser is outside the elements, as the keys (and `item` for an array's members) leading there."""

    def __init__(self) -> None:
        self.keys: list[str | None] = []

    def follow(self, event: str, value: Any) -> None:
        """Move along one event: O(1), however deep (ijson's prefixes cost the depth per event)."""
        if event == "map_key":
            self.keys[-1] = value
        elif event == "start_map":
            self.keys.append(None)
        elif event == "start_array":
            self.keys.append("item")
        elif event in _ENDS:
            self.keys.pop()


def array_elements(handle: BinaryIO, records_path: str, limit: int, skip: int, settled: bool,
                   max_depth: int = MAX_DEPTH) -> Iterator[Element]:
    """Yield the elements of the array at `records_path` ("" for the top level) from element `skip` on.

    Raise NotJson if the file breaks before that array begins, or holds none there.
    """
    reader, index = _Counted(handle), 0
    target: list[str | None] = records_path.split(".") if records_path else []  # type: ignore[assignment]
    members = [*target, "item"]
    path, found, current = _Path(), False, None
    try:
        for event, value in ijson.basic_parse(reader, buf_size=CHUNK, use_float=True):
            if current is None:
                if event == "start_array" and path.keys == target:
                    found = True
                elif found and event not in _ENDS and path.keys == members:
                    current = _Building(index, reader.chunk_start, ijson.ObjectBuilder() if index >= skip else None)
                    index += 1
                if current is None:
                    path.follow(event, value)
            if current is not None and (done := _feed(current, event, value, limit, max_depth)) is not None:
                current = None
                if done.index >= skip:
                    yield done
    except (ijson.JSONError, UnicodeDecodeError) as exc:  # the parser cannot go on after either
        if not found:
            raise NotJson(f"not JSON before the records began: {_first_line(exc)}") from None
        if settled or "premature EOF" not in str(exc):  # else a writer is still at it: wait for the rest
            yield _broken(handle, reader, current.index if current is not None else index, exc)
        return
    if not found:
        raise NotJson(f"no array at records_path {records_path!r}" if records_path else "the top level is not an array")


def _feed(current: _Building, event: str, value: Any, limit: int, max_depth: int) -> Element | None:
    """Add one parse event to the element; return it once complete."""
    current.depth += 1 if event in _STARTS else -1 if event in _ENDS else 0
    if isinstance(value, str):
        current.size += len(value) + 4
        current.lone = current.lone or LONE_MARK in value
    else:
        current.size += 8
    if current.depth > max_depth:
        current.too_deep = True
    if current.builder is not None and (current.size > limit or current.too_deep):
        current.builder = None  # over a limit: read through it without building it
    if current.builder is not None:
        current.builder.event(event, value)
    if current.depth > 0:
        return None
    where = f"element {current.index} (after byte offset {current.start})"
    if current.too_deep:
        return Element(None, current.index, current.start, current.start,
                       f"{where} nests deeper than max_depth {max_depth}",
                       {"_element": current.index, "_over_depth": max_depth})
    if current.size > limit:
        return Element(None, current.index, current.start, current.start, f"{where} is over max_record_bytes {limit}",
                       {"_element": current.index, "_over_bytes": limit})
    value = current.builder.value if current.builder is not None else None
    if current.lone:
        shown = json.dumps(value)[:PREFIX_BYTES].replace(_MARK_ESCAPE.decode(), "\\ufffd")
        return Element(None, current.index, current.start, current.start,
                       f"{where} holds a lone UTF-16 surrogate escape, which JSONB cannot store",
                       {"_element": current.index, "_value": shown})
    fault = _not_object(value)
    if fault is None:
        return Element(value, current.index, current.start, current.start)
    shown = json.dumps(value)[:PREFIX_BYTES]
    return Element(None, current.index, current.start, current.start, f"{where} {fault}",
                   {"_element": current.index, "_value": shown})


def _broken(handle: BinaryIO, reader: _Counted, index: int, exc: ijson.JSONError) -> Element:
    handle.seek(reader.chunk_start)
    evidence = _evidence(handle.read(PREFIX_BYTES), size=reader.read_to - reader.chunk_start)
    fault = (f"JSON syntax error at element {index}, between byte offsets {reader.chunk_start} and {reader.read_to}:"
             f" {_first_line(exc)}; the rest of the array cannot be read reliably and is not loaded")
    return Element(None, index, reader.chunk_start, reader.read_to, fault, {**evidence, "_from_byte": reader.chunk_start})


def _first_line(exc: Exception) -> str:
    text = exc.args[0] if exc.args else str(exc)
    text = text.decode("utf-8", "backslashreplace") if isinstance(text, bytes) else str(text)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
