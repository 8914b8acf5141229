"""Map a record to unified fields by dotted paths, reading each time field in its format (json and http kinds).

    format          a time field's value
    iso             ISO 8601 text, left to validation as every kind's is
    s, ms           an epoch in seconds or milliseconds (a number, or a numeric string), read as UTC
    a strptime      text in that format (`%d/%m/%Y`), UTC unless it says otherwise
    format
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kasparro.sources.filedrop import parse_date

TIME_UNITS = {"s": 1, "ms": 1000}
# The JSON types each unified field may arrive as; numbers may come as numeric strings.
FIELD_TYPES = {"source_asset_id": "string|number", "symbol": "string|null", "name": "string|null",
               "observed_at": "string", "price_usd": "number|string",
               "market_cap_usd": "number|string|null", "volume_24h_usd": "number|string|null",
               "percent_change_24h": "number|string|null"}


def get_path(payload: Mapping[str, Any], path: str) -> Any:
    """Return the value at a dotted path into nested objects; raise KeyError naming the path if it is not there."""
    node: Any = payload
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            raise KeyError(path)
        node = node[key]
    return node


def map_fields(payload: Mapping[str, Any], fields: Mapping[str, str]) -> dict[str, Any]:
    """Read each unified field at its path; raise KeyError naming what is missing."""
    # Blank text is None, and a numeric id is text: an id is a name, not a quantity.
    missing = []
    found: dict[str, Any] = {}
    for unified, path in fields.items():
        try:
            value = get_path(payload, path)
        except KeyError:
            missing.append(path)
            continue
        value = value.strip() if isinstance(value, str) else value
        found[unified] = None if value == "" else value
    if missing:
        raise KeyError(", ".join(sorted(missing)))
    if isinstance(found["source_asset_id"], int | float) and not isinstance(found["source_asset_id"], bool):
        found["source_asset_id"] = str(found["source_asset_id"])
    return found


def read_time(field: str, value: Any, form: str) -> Any:
    """Read an epoch (`s`, `ms`) or a strptime format as UTC; leave ISO 8601 (`iso`) and None as they are."""
    if value is None or form == "iso":
        return value
    if form in TIME_UNITS:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise TypeError(f"{field}: {value!r} is not an epoch time in {form}")
        try:
            return datetime.fromtimestamp(float(value) / TIME_UNITS[form], UTC)
        except (ValueError, OverflowError, OSError):
            raise ValueError(f"{field}: {value!r} is not an epoch time in {form}") from None
    if not isinstance(value, str):
        return value  # not text: validation refuses it as it refuses any time that is not one
    parsed = parse_date(value, form)
    if parsed is None:
        raise ValueError(f"{field}: {value!r} does not match {form!r}")
    return parsed
