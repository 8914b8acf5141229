"""Queued fault injection for the fake upstream server.

Besides wrong answers (429, 5xx, HTML, renamed fields) it sends hostile bodies, so tests can prove a
client ends each cleanly: `drip` (the answer `size` bytes every `interval` seconds), `endless` (a JSON
array that never closes, no Content-Length), `short_body` (Content-Length `declared`, the real body,
then the connection held open `hold` seconds), `huge_body` (Content-Length `declared`, and that many
bytes really sent), `gzip_bomb` (`inflated` zero bytes, gzip-compressed about a thousand to
one, sent with `Content-Encoding: gzip`). Every time a fault may take is capped (MAX_DELAY_SECONDS, MAX_STREAM_SECONDS), so
no injection holds a server thread for ever.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

PROVIDERS = ("coinpaprika", "coingecko", "coincap", "binance", "kraken", "cryptocompare")
FAULT_KINDS = (
    "429", "500", "503", "slow", "truncated", "html", "rename_field", "drop_field", "drop_item", "type_change",
    "drop_column", "add_column", "reset", "drip", "endless", "short_body", "huge_body", "gzip_bomb",
)
# Drift of positional rows (`drop_column`, `add_column`) needs a provider whose records are arrays; drift of
# named fields needs one with objects (Kraken has both: its `result` object and its rows).
ROW_PROVIDERS = frozenset({"binance", "kraken"})
ROWS_ONLY = frozenset({"binance"})
ROW_KINDS = frozenset({"drop_column", "add_column"})
FIELD_KINDS = frozenset({"rename_field", "drop_field", "drop_item", "type_change"})
# The longest `slow` may delay, and the longest a hostile body may stream.
MAX_DELAY_SECONDS = 60.0
MAX_STREAM_SECONDS = 600.0
HUGE_DECLARED = 10**12
# Parameters each kind needs; anything missing is a caller error, caught at inject time.
_REQUIRED = {"rename_field": ("field", "to"), "drop_field": ("field",), "drop_item": ("id",),
             "type_change": ("field",), "drop_column": ("index",), "add_column": ("value",)}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "429": {"retry_after": 1}, "slow": {"delay": 1.0}, "type_change": {"to": "string"},
    "drip": {"interval": 0.5, "size": 1, "seconds": MAX_STREAM_SECONDS},
    "endless": {"seconds": MAX_STREAM_SECONDS},
    "short_body": {"declared": HUGE_DECLARED, "hold": 60.0},
    "huge_body": {"declared": HUGE_DECLARED, "seconds": MAX_STREAM_SECONDS},
    "gzip_bomb": {"inflated": 2**30},
}
# Numeric parameters and the range each must be in: (least, most).
_BOUNDS = {"delay": (0.0, MAX_DELAY_SECONDS), "interval": (0.001, MAX_DELAY_SECONDS), "size": (1, 65536),
           "seconds": (0.0, MAX_STREAM_SECONDS), "hold": (0.0, MAX_STREAM_SECONDS), "declared": (0, 10**15),
           "inflated": (0, 2**34)}
# What `type_change` turns a field's value into.
TYPE_CHANGES = ("string", "null")


@dataclass
class Fault:
    """A fault that applies to the next `remaining` matching requests."""

    provider: str
    kind: str
    remaining: int
    params: dict[str, Any] = field(default_factory=dict)

    def matches(self, path: str) -> bool:
        """Return whether this fault applies to a request for `path`."""
        wanted = self.params.get("path")
        return not wanted or path.endswith(str(wanted))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready view of the fault."""
        return {"provider": self.provider, "kind": self.kind, "remaining": self.remaining,
                **self.params}


def make_fault(provider: str, kind: str | int, times: int = 1, **params: Any) -> Fault:
    """Validate injection arguments and build a fault."""
    kind = str(kind)
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; expected one of {PROVIDERS}")
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
    if int(times) < 1:
        raise ValueError("times must be at least 1")
    if kind in ROW_KINDS and provider not in ROW_PROVIDERS or kind in FIELD_KINDS and provider in ROWS_ONLY:
        raise ValueError(f"{provider} has no {'positional rows' if kind in ROW_KINDS else 'named fields'} "
                         f"for {kind!r}; its drift is {'field' if kind in ROW_KINDS else 'column'} drift")
    missing = [p for p in _REQUIRED.get(kind, ()) if p not in params]
    if missing:
        raise ValueError(f"fault {kind!r} needs parameter(s) {missing}")
    merged = {**_DEFAULTS.get(kind, {}), **params}
    if kind == "type_change" and merged["to"] not in TYPE_CHANGES:
        raise ValueError(f"type_change 'to' must be one of {TYPE_CHANGES}, not {merged['to']!r}")
    if "index" in merged and (isinstance(merged["index"], bool) or not isinstance(merged["index"], int)
                              or merged["index"] < 0):
        raise ValueError(f"index must be a column number from 0, not {merged['index']!r}")
    for name in set(merged) & set(_BOUNDS):
        merged[name] = _bounded(name, merged[name])
    if "retry_after" in merged:
        header_value(merged["retry_after"])
    return Fault(provider, kind, int(times), merged)


def _bounded(name: str, value: Any) -> float:
    least, most = _BOUNDS[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not least <= value <= most:
        raise ValueError(f"{name} must be a number from {least:g} to {most:g}, not {value!r}")
    return value


def header_value(value: Any) -> str:
    """Return `value` as header text, refusing what could split the header (CR, LF) or not encode."""
    text = str(value)
    if any(ord(c) < 0x20 or ord(c) > 0xFF or c == "\x7f" for c in text):
        raise ValueError(f"retry_after must be printable Latin-1 text on one line, not {text!r}")
    return text


class FaultQueue:
    """Hold faults per provider in injection order; each request consumes at most one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        """Queue a fault behind any already waiting."""
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    def take(self, provider: str, path: str) -> Fault | None:
        """Consume one use of the first queued fault matching this request."""
        with self._lock:
            for fault in self._faults:
                if fault.provider == provider and fault.matches(path):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def snapshot(self) -> list[dict[str, Any]]:
        """Return the queued faults as dicts."""
        with self._lock:
            return [f.to_dict() for f in self._faults]


def rename_field(payload: Any, old: str, new: str) -> Any:
    """Rename `old` to `new` in every object of a JSON array payload."""
    if isinstance(payload, list):
        return [{(new if k == old else k): v for k, v in obj.items()}
                if isinstance(obj, dict) else obj for obj in payload]
    return payload


def drop_field(payload: Any, name: str) -> Any:
    """Remove `name` from every object of a JSON array payload."""
    if isinstance(payload, list):
        return [{k: v for k, v in obj.items() if k != name}
                if isinstance(obj, dict) else obj for obj in payload]
    return payload


def drop_item(payload: Any, item_id: str) -> Any:
    """Remove the object whose `id` is `item_id` from a JSON array payload: the coin left the listing."""
    if isinstance(payload, list):
        return [obj for obj in payload if not (isinstance(obj, dict) and obj.get("id") == item_id)]
    return payload


def type_change(payload: Any, name: str, to: str) -> Any:
    """Send `name` as a string (`"64000.5"`) or as null in every object of a JSON array payload."""
    def changed(value: Any) -> Any:
        return None if to == "null" else str(value)

    if isinstance(payload, list):
        return [{k: (changed(v) if k == name else v) for k, v in obj.items()}
                if isinstance(obj, dict) else obj for obj in payload]
    return payload


HTML_ERROR_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>502 Bad Gateway</title></head>
<body>
<h1>Bad gateway</h1>
<p>The web server reported a bad gateway error. Please try again in a few minutes.</p>
<p>Ray ID: fake-upstream &bull; Performance &amp; security by a CDN</p>
</body>
</html>
"""
