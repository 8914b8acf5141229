"""Cut a CSV byte stream into records the way the csv module will read them, and mark the ones it cannot.

A record is one line, or several while a quoted field holds line breaks. Two
faults are found here, before any decoding, so that neither can sink a file:

| fault                                   | what happens                                              |
|-----------------------------------------|-----------------------------------------------------------|
| a line longer than `limit` bytes        | read through in chunks (hashed, never held) and marked    |
| a quote open past `limit` bytes, or at  | the record's first line is marked "unclosed quote"; the   |
| the end of a settled file               | lines after it are read again, each on its own            |

Each line joins a record at most once and is read again at most once, so the
work stays linear in the size of the file, and memory stays within `limit`.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

READ_CHUNK = 64 * 1024
# The content of a quoted field up to its closing quote: anything but a quote, or a doubled quote.
_QUOTED = re.compile(rb'(?:[^"]+|"")*')


class Line(NamedTuple):
    """One physical line; `data` is only its start when the line is over the limit.

    Named tuples, not dataclasses: one is built per line of the file, and a tuple builds fastest.
    """

    data: bytes
    start: int
    number: int
    size: int
    complete: bool
    oversize: bool = False
    digest: str = ""


class Record(NamedTuple):
    """A record's bytes and where it lies, or, when `fault` is set, why it cannot be read."""

    data: bytes
    start: int
    end: int
    line: int
    last_line: int
    fault: str | None = None
    digest: str = ""


def lines(handle: BinaryIO, offset: int, line_no: int, settled: bool, limit: int) -> Iterator[Line]:
    """Yield the lines after `offset`; a last line without a newline only once the file is `settled`."""
    while data := handle.readline(limit + 1):
        line_no += 1
        if len(data) > limit:
            line = _long_line(handle, data, offset, line_no)
        else:
            line = Line(data, offset, line_no, len(data), complete=data.endswith(b"\n"))
        if not (line.complete or settled):
            return
        yield line
        offset += line.size


def _long_line(handle: BinaryIO, data: bytes, offset: int, line_no: int) -> Line:
    # Read through to the newline without keeping it: only the start, the hash and the length survive.
    digest, size, chunk = hashlib.sha256(data), len(data), data
    while not chunk.endswith(b"\n"):
        chunk = handle.readline(READ_CHUNK)
        if not chunk:
            break
        digest.update(chunk)
        size += len(chunk)
    return Line(data[:READ_CHUNK], offset, line_no, size, complete=chunk.endswith(b"\n"), oversize=True,
                digest=digest.hexdigest())


def ends_quoted(data: bytes, quoted: bool, delimiter: bytes) -> bool:
    """Return whether a line ends inside a quoted field, given whether it starts inside one.

    As the csv module reads: a quote opens a field only at the field's start,
    a doubled quote inside one is a literal quote, and anything after the
    closing quote up to the delimiter belongs to the same field.
    """
    if b'"' not in data:
        return quoted
    pos = 0
    while True:
        if quoted or data.startswith(b'"', pos):
            pos = _QUOTED.match(data, pos if quoted else pos + 1).end()  # type: ignore[union-attr]
            if pos >= len(data):
                return True
            quoted = False
        pos = data.find(delimiter, pos)
        if pos < 0:
            return False
        pos += len(delimiter)


def records(source: Iterator[Line], delimiter: bytes, limit: int, settled: bool) -> Iterator[Record]:
    """Join lines into records while a quote is open; mark lines too long and quotes never closed."""
    pending: list[Line] = []
    size = 0
    for line in source:
        if pending and (line.oversize or size + line.size > limit):
            yield from _broken(pending)
            pending, size = [], 0  # and `line` is read afresh
        if line.oversize:
            yield _too_long(line, limit)
        elif ends_quoted(line.data, bool(pending), delimiter):
            pending.append(line)
            size += line.size
        elif not pending:  # the usual case: a record of one line
            yield Record(line.data, line.start, line.start + line.size, line.number, line.number)
        else:
            yield _joined([*pending, line])
            pending, size = [], 0
    if pending and settled:
        yield from _broken(pending)


def _broken(pending: list[Line]) -> Iterator[Record]:
    # The quote opened on the first line never closed: reject that line alone. The lines
    # after it stayed inside the quote, so each of their quotes is one of a doubled pair,
    # and read afresh none of them opens a quote: each is a record on its own.
    yield _unclosed(pending[0])
    for line in pending[1:]:
        yield _joined([line])


def _joined(group: list[Line]) -> Record:
    last = group[-1]
    return Record(b"".join(line.data for line in group), group[0].start, last.start + last.size, group[0].number,
                  last.number)


def _unclosed(line: Line) -> Record:
    fault = f"unclosed quote opened on line {line.number} at byte offset {line.start}"
    return Record(line.data, line.start, line.start + line.size, line.number, line.number, fault,
                  hashlib.sha256(line.data).hexdigest())


def _too_long(line: Line, limit: int) -> Record:
    fault = f"row on line {line.number} at byte offset {line.start} is {line.size} bytes, over max_row_bytes {limit}"
    return Record(line.data, line.start, line.start + line.size, line.number, line.number, fault, line.digest)
