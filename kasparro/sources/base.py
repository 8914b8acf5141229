"""Define what every source provides: pages of raw records, and a mapping to unified fields.

A source knows nothing of Flask, Celery or the database. It reads from where
its data lives, starting after a cursor it produced earlier, and yields pages;
each page carries the cursor to store once that page is safely loaded.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


# The payload key under which extract keeps why a row could not be read; transform rejects such a payload.
UNREADABLE = "_unreadable"
# Records per raw batch (a page, a transaction) when neither the source's `batch_size` nor BATCH_SIZE says;
# a kind may set its own `default_batch_size` (a CSV file's raw chunks are larger: see csv_file).
DEFAULT_BATCH_SIZE = 5000
# Bytes per raw batch when neither the source's `max_batch_bytes` nor BATCH_MAX_BYTES says: a batch closes
# before it would pass them, whatever its count (a raw chunk's row, a page's payloads, a worker's memory).
# 32 MiB: a chunk whose lines all take the record-by-record path peaked at 812 MiB at 64 MiB and 316 MiB at
# 16 MiB, so a worker stays well under 1 GiB; ordinary chunks (20,000 lines) are a few MiB and never reach it.
DEFAULT_BATCH_BYTES = 32 * 1024 * 1024
# The cursor key holding one human-readable line on where the cursor stands ("line 301, byte 18,234 of
# 18,234"). A source writes it into its own cursors and ignores it when reading one back; GET /sources
# shows it, so the API can describe a checkpoint without knowing any source's cursor shape.
CURSOR_SUMMARY = "summary"


# How deeply a record may nest objects and arrays in each other when the source's `max_depth` does not say.
MAX_DEPTH = 64
# The highest `max_depth` allowed: Python's encoder and PostgreSQL's JSONB parser recurse once per level.
MAX_DEPTH_CEILING = 512
# How much of a record's text the raw layer keeps when the record itself cannot be kept.
EVIDENCE_CHARS = 64 * 1024


class TooDeep(ValueError):
    """A JSON text nests objects and arrays deeper than its limit allows."""


class Unstorable(ValueError):
    """A payload PostgreSQL's JSONB cannot hold as received; `text` is its canonical JSON, when it has one."""

    def __init__(self, reason: str, text: str = "") -> None:
        super().__init__(reason)
        self.text = text


def loads_json(data: str | bytes, max_depth: int | None = None) -> Any:
    """Parse JSON, keeping NaN, Infinity and -Infinity as the text they were; raise TooDeep past `max_depth`.

    They are not JSON, but some feeds send them and Python's parser would make floats of them,
    which the raw layer's JSONB then refuses for the whole batch; as text, validation rejects
    only the record that holds one. Without `max_depth`, only nesting Python cannot follow is TooDeep.
    """
    try:
        value = json.loads(data, parse_constant=str)
    except RecursionError:
        limit = f"max_depth {max_depth}" if max_depth else "Python's parser can follow"
        raise TooDeep(f"nests deeper than {limit}") from None
    if max_depth is not None and _brackets(data) > max_depth and deeper_than(value, max_depth):
        raise TooDeep(f"nests deeper than max_depth {max_depth}")
    return value


def _brackets(data: str | bytes) -> int:
    # Cheap: a text with no more brackets than the limit cannot nest past it (brackets in strings only add).
    opening = (b"[", b"{") if isinstance(data, bytes) else ("[", "{")
    return data.count(opening[0]) + data.count(opening[1])


def deeper_than(value: Any, limit: int) -> bool:
    """Return whether `value` nests objects and arrays more than `limit` deep (`{}` is 1 deep, a scalar 0)."""
    level, depth = [value], 0
    while level:
        containers = [node for node in level if isinstance(node, dict | list)]
        if not containers:
            return False
        depth += 1
        if depth > limit:
            return True
        level = [child for node in containers for child in (node.values() if isinstance(node, dict) else node)]
    return False


# One encoder for every payload: json.dumps with options builds a new one per call (a third of its cost).
# ASCII output keeps each character visible as an escape, so what JSONB refuses can be found in the text.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)
# Tokens of the ASCII text read left to right: an escaped backslash (so `\\ud83d` is text, not a surrogate),
# NUL, a surrogate pair, a lone surrogate.
_ESCAPES = re.compile(r"\\\\|\\u0000|\\ud[89ab][0-9a-f]{2}\\ud[c-f][0-9a-f]{2}|\\ud[89a-f][0-9a-f]{2}")


def canonical_json(payload: Any, lenient: bool = False) -> str:
    """Serialise a payload as the raw layer keeps it: keys sorted, no spaces, ASCII; NUL becomes U+FFFD.

    Raise Unstorable for what JSONB refuses: a lone UTF-16 surrogate in a key or a value, a number
    out of float range, nesting past Python's limit. `lenient` (for our own evidence and reasons)
    keeps a lone surrogate as the literal text of its escape instead.
    """
    try:
        text = _CANONICAL.encode(payload)
    except RecursionError:
        raise Unstorable("nests deeper than Python can serialise") from None
    except ValueError:
        raise Unstorable("holds a number out of range (Infinity or NaN), which JSONB cannot store") from None
    if "\\ud" not in text and "\\u0000" not in text:
        return text
    lone: list[str] = []

    def fix(match: re.Match[str]) -> str:
        token = match.group()
        if token == "\\u0000":
            return "\\ufffd"
        if len(token) == 6:
            lone.append(token)
            return "\\" + token
        return token

    fixed = _ESCAPES.sub(fix, text)
    if lone and not lenient:
        # The text as received (lone escape and all) is what the record's hash is of: it differs from a
        # record holding the literal text `\\ud83d`, whose canonical JSON is the fixed text.
        # An API body's bytes that are not UTF-8 are read as U+DC80..U+DCFF (see http._readable).
        byte = (f", or a byte 0x{lone[0][4:]} that is not UTF-8, as it reads" if 0xDC80 <= int(lone[0][2:], 16) <= 0xDCFF
                else "")
        raise Unstorable(f"holds a lone UTF-16 surrogate ({lone[0]}{byte}), which JSONB cannot store", text)
    return fixed


def evidence(text: str) -> dict[str, Any]:
    """Return what identifies a record kept only as evidence: its text (up to EVIDENCE_CHARS), hash and length."""
    return {"_prefix": text[:EVIDENCE_CHARS], "_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "_bytes": len(text)}


def unreadable(payload: dict[str, Any], max_depth: int) -> dict[str, Any] | None:
    """Return evidence naming why `payload` cannot be kept as received (too deep, unstorable), or None if it can."""
    if deeper_than(payload, max_depth):
        try:
            shown = evidence(canonical_json(payload, lenient=True))
        except Unstorable:
            shown = {}
        return {**shown, UNREADABLE: f"nests deeper than max_depth {max_depth}"}
    try:
        canonical_json(payload)
    except Unstorable as exc:
        return {**evidence(exc.text), UNREADABLE: str(exc)}
    return None


@dataclass(frozen=True)
class RawItem:
    """One record exactly as the source gave it, and where it came from.

    `error` says why the source could not read the record (too long, not
    text, a quote never closed); the payload then holds what identifies the
    bytes, and the record is rejected with that reason instead of failing the source.
    """

    payload: dict[str, Any]
    position: str
    error: str | None = None


# The units a source can count its progress in (see Progress).
PROGRESS_UNITS = ("bytes", "pages", "records")


@dataclass(frozen=True)
class Progress:
    """How far a read has got: `done` of `total` units (None when unknown), counted from `start`.

    `start` is where this read began (a CSV resumed at a byte offset), so a rate
    and an ETA are taken over what this read covered, not what an earlier run did.
    """

    done: int
    total: int | None
    unit: str
    start: int = 0


@dataclass(frozen=True)
class Page:
    """Records read together, the source's cursor once they are loaded, and how far the read has got."""

    items: list[RawItem]
    cursor: dict[str, Any]
    progress: Progress | None = None


@dataclass(frozen=True)
class Chunk:
    """Records of a file kept as the bytes they were, not parsed: the raw layer of a plain stretch of a file.

    A source yields one in place of a Page when its records are simple enough for
    PostgreSQL's own parser to read exactly as the source would (`pipeline/chunks.py`).
    `header` is the line the records are read under; `first_line` the line number of
    the first record, each later record being on the next line; `repeats` lists the
    lines whose bytes repeat an earlier line of the chunk (kept as received, loaded once).
    """

    file: str
    header: bytes
    data: bytes
    first_line: int
    byte_start: int
    byte_end: int
    records: int
    repeats: list[int]
    cursor: dict[str, Any]
    progress: Progress | None = None


@dataclass
class RequestStats:
    """Evidence of how a source used its upstream: requests, retries, throttling, waits."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    wait_seconds: float = 0.0
    waits: list[float] = field(default_factory=list)

    def take(self) -> RequestStats:
        """Return the counts so far and start counting afresh."""
        taken = RequestStats(self.requests, self.retries, self.throttled, self.wait_seconds, self.waits)
        self.requests, self.retries, self.throttled, self.wait_seconds, self.waits = 0, 0, 0, 0.0, []
        return taken


# The unified fields a source maps each payload to (all values may still be strings).
UNIFIED_FIELDS = (
    "source_asset_id",
    "symbol",
    "name",
    "observed_at",
    "price_usd",
    "market_cap_usd",
    "volume_24h_usd",
    "percent_change_24h",
)


# JSON value types a payload field may hold, as schema drift names them.
JSON_TYPES = ("string", "number", "boolean", "null", "object", "array")


@dataclass(frozen=True)
class Expected:
    """What a source expects of one payload field: the JSON types it may hold, and whether it must be there.

    Nested fields are named by dotted paths (`quotes.USD.price`).
    """

    types: tuple[str, ...]
    required: bool = True


def expect(types: str, required: bool = True) -> Expected:
    """Spell an expectation compactly: `expect("number|null")`."""
    return Expected(tuple(types.split("|")), required)


# What a source's records become: market quotes, or news items (a kind sets `target = "news"`).
TARGETS = ("quotes", "news")


class Source(Protocol):
    """A place quotes (or, for a kind whose `target` is "news", news items) come from."""

    name: str
    kind: str

    def pages(self, cursor: Mapping[str, Any] | None, page_size: int) -> Iterator[Page]:
        """Yield pages of records newer than `cursor`, oldest first."""
        ...

    def to_unified(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Map one raw payload to the unified field names; raise KeyError for a missing field."""
        ...

    def expected_schema(self) -> Mapping[str, Expected]:
        """Return the payload fields `to_unified` reads, by (dotted) name, with the types each may hold."""
        ...
