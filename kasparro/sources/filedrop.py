"""Share what the file-drop kinds (csv, json) need: a fingerprint of the bytes consumed, byte-limit settings, dates.

A file source resumes at a byte offset only if the bytes before it are the
ones it read: their head and the bytes just before the offset are hashed into
the cursor, and compared before resuming.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

from kasparro.errors import SourceConfigError
from kasparro.sources.base import UNIFIED_FIELDS

# The unified fields every file source must map: without them no quote can be built.
REQUIRED_FIELDS = ("source_asset_id", "observed_at", "price_usd")

HEAD_BYTES = 64 * 1024
TAIL_BYTES = 4 * 1024


def _digest(handle: BinaryIO, start: int, end: int) -> str:
    handle.seek(start)
    return hashlib.sha256(handle.read(max(end - start, 0))).hexdigest()


def fingerprint(handle: BinaryIO, offset: int) -> dict[str, Any]:
    """Fingerprint the consumed part of a file: its head and the bytes just before `offset`.

    The handle is left where it was: the reader may already have read ahead.
    """
    position = handle.tell()
    head_end = min(offset, HEAD_BYTES)
    tail_start = max(offset - TAIL_BYTES, 0)
    found = {"head": _digest(handle, 0, head_end), "tail": _digest(handle, tail_start, offset)}
    handle.seek(position)
    return found


def file_path(spec: Mapping[str, Any], base_dir: Path) -> Path:
    """Return the declared `path`, taken relative to `base_dir` unless it is absolute."""
    path = Path(spec.get("path", ""))
    return path if path.is_absolute() else base_dir / path


def field_mapping(spec: Mapping[str, Any], key: str, name: str) -> dict[str, str]:
    """Read a mapping of unified fields to the file's own names; raise SourceConfigError if one is wrong."""
    mapping = dict(spec.get(key, {}))
    missing = [f for f in REQUIRED_FIELDS if f not in mapping]
    unknown = [f for f in mapping if f not in UNIFIED_FIELDS]
    if missing or unknown:
        raise SourceConfigError(f"{key} mapping: missing {missing}, unknown {unknown}", source=name)
    return mapping


def byte_limit(spec: Mapping[str, Any], key: str, default: int, name: str) -> int:
    """Read a positive byte count from a source's settings; raise SourceConfigError otherwise."""
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SourceConfigError(f"{key} must be a positive whole number of bytes, not {value!r}", source=name)
    return value


@lru_cache(maxsize=65536)
def parse_date(value: str, date_format: str) -> datetime | None:
    """Parse a date in `date_format` as UTC unless it says otherwise; None if it does not match.

    Cached: a file of daily quotes repeats each date once per coin, and strptime is slow.
    """
    try:
        parsed = datetime.strptime(value, date_format)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
