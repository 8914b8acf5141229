"""What every venue shares: the Venue base, query parsing, a time-window slice, and body drift for faults.

A venue's answer keeps its records at one place in the body: `OBJECTS` is the key path to records that are
JSON objects (where `rename_field`, `drop_field`, `type_change`, `drop_item` act), `ROWS` the key path to
positional rows (where `drop_column`, `add_column` act); `"*"` means every list under that object.
"""
from __future__ import annotations

import bisect
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..faults import drop_field, drop_item, rename_field, type_change

Response = tuple[int, Any]
Path_ = tuple[str, ...]


class Venue:
    """One fake API: its routes, its error bodies, and where its records sit in a body."""

    name = ""
    OBJECTS: Path_ | None = None
    ROWS: Path_ | None = None

    def __init__(self, data_dir: Path) -> None:
        """Load the venue's recorded payloads from `data_dir / name`."""

    def route(self, endpoint: str, query: Mapping[str, str]) -> Response:
        """Answer a GET to `endpoint` (the path after the venue's prefix)."""
        raise NotImplementedError

    def error_body(self, status: int) -> Any:
        """Return the body this venue sends with a 429 or a 5xx."""
        raise NotImplementedError

    def failed(self, body: Any) -> bool:
        """Return whether a 200 answer is an error in the venue's own shape (Kraken, CryptoCompare)."""
        return False

    def advance(self) -> None:
        """Move the venue's clock on; venues without one do nothing."""

    def reset(self) -> None:
        """Rewind the venue's clock."""

    def describe(self) -> dict[str, Any]:
        """Return a JSON-ready summary for the admin state endpoint."""
        return {}


def load_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return json.load(fh)


def int_param(query: Mapping[str, str], name: str, default: int | None) -> int | None:
    """Return the integer query parameter `name` (`default` when absent or empty); raise ValueError if not one."""
    raw = query.get(name)
    if raw is None or raw.strip() == "":
        return default
    return int(raw.strip())


def between(rows: Sequence[Any], key: Callable[[Any], int], low: int | None, high: int | None) -> list[Any]:
    """Return the rows (sorted by `key`) whose key is in [low, high], either bound optional."""
    keys = [key(row) for row in rows]
    start = 0 if low is None else bisect.bisect_left(keys, low)
    end = len(rows) if high is None else bisect.bisect_right(keys, high)
    return list(rows[start:end])


def drop_column(rows: Any, index: int) -> Any:
    """Remove column `index` from every positional row: a column the venue stopped sending."""
    return [row[:index] + row[index + 1:] if isinstance(row, list) else row for row in rows]


def add_column(rows: Any, index: int | None, value: Any) -> Any:
    """Insert `value` at column `index` (the end when None) of every positional row: a column the venue added."""
    def grown(row: list[Any]) -> list[Any]:
        at = len(row) if index is None else index
        return row[:at] + [value] + row[at:]
    return [grown(row) if isinstance(row, list) else row for row in rows]


def _at(node: Any, path: Path_, change: Callable[[Any], Any]) -> Any:
    if not path:
        # One object (Kraken's `result`) drifts like a list of one.
        return change([node])[0] if isinstance(node, dict) else change(node)
    head, rest = path[0], path[1:]
    if not isinstance(node, dict):
        return node
    if head == "*":
        return {k: (_at(v, rest, change) if isinstance(v, list) else v) for k, v in node.items()}
    return {**node, head: _at(node[head], rest, change)} if head in node else node


def drift(venue_path: Path_ | None, kind: str, params: Mapping[str, Any], body: Any) -> Any:
    """Return `body` with the drift fault `kind` applied where the venue keeps its records."""
    changes: dict[str, Callable[[Any], Any]] = {
        "rename_field": lambda rows: rename_field(rows, params.get("field", ""), params.get("to", "")),
        "drop_field": lambda rows: drop_field(rows, params.get("field", "")),
        "drop_item": lambda rows: drop_item(rows, params.get("id", "")),
        "type_change": lambda rows: type_change(rows, params.get("field", ""), params.get("to", "string")),
        "drop_column": lambda rows: drop_column(rows, int(params.get("index", 0))),
        "add_column": lambda rows: add_column(rows, params.get("index"), params.get("value")),
    }
    if venue_path is None or kind not in changes:
        return body
    return _at(body, venue_path, changes[kind])
