"""Opaque keyset cursors: the last row's sort key plus a fingerprint of the query it belongs to.

A cursor is base64url(JSON {"k": [key values], "f": fingerprint}). The fingerprint
hashes the filters and sort order, so a cursor replayed with other filters is
refused instead of silently skipping or repeating rows. Cursors are positions,
not credentials, so they are not signed.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from marshmallow import ValidationError

FINGERPRINT_CHARS = 16
# Every cursor is base64url, unpadded, of '{"k":[' and the rest: "eyJrIjpb" is those six bytes encoded.
PATTERN = r"^eyJrIjpb[A-Za-z0-9_-]+$"
MAX_LENGTH = 2000


def fingerprint(scope: str, params: Mapping[str, Any]) -> str:
    """Hash what a page depends on (endpoint scope, filters, sort) into a short tag."""
    canonical = json.dumps({"scope": scope, **params}, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:FINGERPRINT_CHARS]


def encode(key: Sequence[Any], tag: str) -> str:
    """Encode a row's sort key and the query fingerprint as an opaque token."""
    values = [v.isoformat() if isinstance(v, datetime) else v for v in key]
    raw = json.dumps({"k": values, "f": tag}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# The shortest cursor there can be: a one-value key and a fingerprint.
MIN_LENGTH = len(encode([0], "0" * FINGERPRINT_CHARS))


def decode(token: str, tag: str, types: Sequence[type]) -> tuple[Any, ...]:
    """Return the sort key in `token`, checking it was made for the same query; raise ValidationError."""
    try:
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        values = payload["k"]
        made_for = payload["f"]
        if not isinstance(values, list) or len(values) != len(types):
            raise ValueError("wrong key length")
        key = tuple(_convert(value, kind) for value, kind in zip(values, types, strict=True))
    except (ValueError, KeyError, TypeError, UnicodeError, binascii.Error):
        raise ValidationError("is not a valid cursor") from None
    if made_for != tag:
        raise ValidationError("was issued for different filters or sort order; start again without a cursor")
    return key


def _convert(value: Any, kind: type) -> Any:
    if kind is datetime:
        if not isinstance(value, str):
            raise ValueError("expected a timestamp")
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError("expected an aware timestamp")
        return parsed
    if kind is int:
        # bool is an int in Python, but never a row id; and ids must fit Postgres bigint.
        if type(value) is not int or not -(2**63) <= value < 2**63:
            raise ValueError("expected an id")
        return value
    if not isinstance(value, kind) or (isinstance(value, str) and "\x00" in value):
        raise ValueError(f"expected {kind.__name__}")
    return value


def page(rows: Sequence[Any], limit: int, key: Any, tag: str) -> tuple[list[Any], str | None]:
    """Cut a limit+1 fetch to one page and return it with the cursor of the next page, if any."""
    if len(rows) <= limit:
        return list(rows), None
    kept = list(rows[:limit])
    return kept, encode(key(kept[-1]), tag)
