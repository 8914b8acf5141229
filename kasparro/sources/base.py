"""Define what every source provides: pages of raw records, and a mapping to unified fields.

A source knows nothing of Flask, Celery or the database. It reads from where
its data lives, starting after a cursor it produced earlier, and yields pages;
each page carries the cursor to store once that page is safely loaded.
"""
from __future__ import annotations

import json
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
DEFAULT_BATCH_BYTES = 64 * 1024 * 1024
# The cursor key holding one human-readable line on where the cursor stands ("line 301, byte 18,234 of
# 18,234"). A source writes it into its own cursors and ignores it when reading one back; GET /sources
# shows it, so the API can describe a checkpoint without knowing any source's cursor shape.
CURSOR_SUMMARY = "summary"


def loads_json(data: str | bytes) -> Any:
    """Parse JSON, keeping NaN, Infinity and -Infinity as the text they were.

    They are not JSON, but some feeds send them and Python's parser would make floats of them,
    which the raw layer's JSONB then refuses for the whole batch; as text, validation rejects
    only the record that holds one.
    """
    return json.loads(data, parse_constant=str)


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
