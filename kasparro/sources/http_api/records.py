"""Find the records in an answer, refuse an answer that reports an error, and map a record to unified fields.

    records_path node      what becomes a record
    a list                 each element
    an object              each value that is an object, and each element of a value that is a list, with
                           the key kept as `$key` (Kraken's `result` is keyed by pair); any other value (Kraken's
                           sibling `last` integer) holds no records and is skipped
    an element that is     an object of the names in `columns`, by position (Binance klines); values past
    a list                 the last name are kept under `$rest`; a row short of the names is rejected by the
                           source (a dropped column moves every later value off its name)

A record also carries `$each` (the series' fan-out values) when `each` is set, and `$body` (the answer's
values at the `$body.` paths a field reads, such as CoinCap's `timestamp`). The raw layer hashes what a record
holds, so a record fetched twice (an overlap) is kept once.
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kasparro.errors import PayloadError, SourceConfigError
from kasparro.sources.base import Expected, expect, unreadable
from kasparro.sources.fields import FIELD_TYPES, TIME_UNITS, map_fields, read_time
from kasparro.sources.filedrop import field_mapping
from kasparro.sources.paginate import value_at
from kasparro.sources.watermark import parse_time

KEY, EACH, BODY, REST = "$key", "$each", "$body", "$rest"


def find_records(body: Any, records_path: str, columns: list[str]) -> list[dict[str, Any]] | None:
    """Return the records at `records_path` as objects, or None when nothing there can hold records."""
    node = value_at(body, records_path)
    if isinstance(node, list):
        return [_record(element, columns) for element in node]
    if not isinstance(node, Mapping):
        return None
    found: list[dict[str, Any]] = []
    for key, value in node.items():
        if isinstance(value, Mapping):
            found.append({**value, KEY: key})
        elif isinstance(value, list):
            found.extend({**_record(element, columns), KEY: key} for element in value)
    return found


def _record(element: Any, columns: list[str]) -> dict[str, Any]:
    if isinstance(element, list) and columns:
        named = dict(zip(columns, element))
        return {**named, REST: element[len(columns):]} if len(element) > len(columns) else named
    return dict(element) if isinstance(element, Mapping) else {"_value": element}


def decorate(records: list[dict[str, Any]], each: Mapping[str, Any], body: Any, body_paths: list[str],
             max_depth: int) -> list[dict[str, Any]]:
    """Add the series' `$each` values and the answer's `$body` values; mark what the raw layer cannot keep."""
    shared: dict[str, Any] = {}
    if each:
        shared[EACH] = dict(each)
    if body_paths:
        shared[BODY] = {}
        for path in body_paths:
            _put(shared[BODY], path, value_at(body, path))
    return [unreadable(record, max_depth) or record for record in ({**r, **shared} for r in records)]


def _put(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[last] = value


def check_error(source: str, body: Any, error_path: str, ok_value: Any, message_path: str, shown: str) -> None:
    """Raise PayloadError when the answer reports an error at `error_path` (non-empty, or not `ok_value`)."""
    if not error_path:
        return
    value = value_at(body, error_path)
    failed = value != ok_value if ok_value is not None else value not in (None, "", [], {}, False)
    if failed:
        message = value_at(body, message_path) if message_path else None
        said = f": {str(message)[:200]}" if message is not None else ""
        raise PayloadError(f"{shown} answered with an error at {error_path}: {str(value)[:200]}{said}",
                           source=source)


class FieldMap:
    """Unified fields read from a record by dotted paths, each time field in its own format."""

    def __init__(self, source: str, spec: Mapping[str, Any], each_keys: set[str]) -> None:
        self.fields = field_mapping(spec, "fields", source)
        times = spec.get("times", {})
        if not isinstance(times, Mapping):
            raise SourceConfigError(f"times must be a table, not {times!r}", source=source)
        self.times = {"observed_at": "iso", **times}
        for field, form in self.times.items():
            known = isinstance(form, str) and (form in ("iso", *TIME_UNITS) or "%" in form)
            if field not in self.fields or not known:
                raise SourceConfigError(f"times.{field} must name a mapped field and be iso, s, ms or a strptime "
                                        f"format, not {form!r}", source=source)
        self.body_paths = [p.removeprefix(f"{BODY}.") for p in self.fields.values() if p.startswith(f"{BODY}.")]
        for field, path in self.fields.items():
            head, _, rest = path.partition(".")
            if head.startswith("$") and not (head == KEY or (head == BODY and rest)
                                             or (head == EACH and rest in each_keys)):
                raise SourceConfigError(f"fields.{field} reads {path!r}: a $ path is $key, $body.<path> or "
                                        f"$each.<each key>", source=source)

    def expected_schema(self) -> dict[str, Expected]:
        """Return the mapped paths with the JSON types each may hold; an epoch time is a number."""
        types = {**FIELD_TYPES, **{f: "number|string" for f, form in self.times.items() if form in TIME_UNITS}}
        return {path: expect(types[unified]) for unified, path in self.fields.items()}

    def unified(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Map a record to unified fields, each time field read in its format; raise KeyError naming missing paths."""
        fields = map_fields(payload, self.fields)
        for field, form in self.times.items():
            fields[field] = read_time(field, fields[field], form)
        return fields


def observed(value: Any) -> datetime | None:
    """Return a mapped observed_at as an aware datetime, or None when it is not one."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return parse_time(value)
