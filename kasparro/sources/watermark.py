"""Remember each asset's last update, so an API source yields only what changed since it last loaded.

The cursor is `{"seen": {source_asset_id: last_updated}}`, merged forward page by
page: a page's cursor covers every item of that page and the pages before it.
An item is new when its asset is unknown or its `last_updated` is later than
the one remembered; an item without a readable `last_updated` is always new
(the pipeline's content hash still drops exact repeats). The last page of an
extract keeps only assets seen in it, so coins that left the listing do not
grow the cursor forever.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from kasparro.sources.base import CURSOR_SUMMARY, MAX_DEPTH, RawItem, unreadable


def parse_time(value: Any) -> datetime | None:
    """Parse an ISO-8601 timestamp (a trailing Z allowed), or return None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


class Watermarks:
    """Per-asset last-update watermarks for one extract."""

    def __init__(self, cursor: Mapping[str, Any] | None) -> None:
        seen = (cursor or {}).get("seen")
        self.seen: dict[str, str] = dict(seen) if isinstance(seen, Mapping) else {}
        self.observed: set[str] = set()

    def is_new(self, payload: Mapping[str, Any]) -> bool:
        """Return whether `payload` changed since its asset was last loaded; note the asset as listed."""
        asset_id = payload.get("id")
        updated = parse_time(payload.get("last_updated"))
        if not _keyable(asset_id) or updated is None:
            return True
        self.observed.add(asset_id)
        known = parse_time(self.seen.get(asset_id))
        return known is None or updated > known

    def advance(self, items: Iterable[RawItem]) -> None:
        """Move the watermarks past `items`, which are about to be handed over."""
        for item in items:
            asset_id, stamp = item.payload.get("id"), item.payload.get("last_updated")
            updated = parse_time(stamp)
            if not _keyable(asset_id) or updated is None:
                continue
            known = parse_time(self.seen.get(asset_id))
            if known is None or updated > known:
                self.seen[asset_id] = stamp

    def cursor(self, final: bool = False) -> dict[str, Any]:
        """Return the cursor as of now; a final one drops assets missing from this extract."""
        seen = {k: v for k, v in self.seen.items() if k in self.observed} if final else dict(self.seen)
        return {"seen": seen, CURSOR_SUMMARY: summary(seen)}


def _keyable(asset_id: Any) -> bool:
    # The cursor is JSONB, which cannot hold NUL: such an asset is always new (its content hash still dedups).
    return isinstance(asset_id, str) and "\x00" not in asset_id


def summary(seen: Mapping[str, str]) -> str:
    """Say how many assets the watermarks cover and the newest update among them."""
    stamps = [stamp for stamp in (parse_time(value) for value in seen.values()) if stamp is not None]
    newest = f", newest update {max(stamps).isoformat()}" if stamps else ""
    return f"last updates of {len(seen)} assets{newest}"


def as_objects(payload: Any, max_depth: int = MAX_DEPTH) -> list[dict[str, Any]]:
    """Return a JSON array's elements as objects, each to be kept as received or rejected later.

    A stray non-object is wrapped. An element nested past `max_depth`, or holding what the raw layer
    cannot store (a lone surrogate), becomes the evidence and reason that will reject it: checked here,
    before the watermarks, so its id never reaches the cursor.
    """
    objects = [element if isinstance(element, dict) else {"_value": element} for element in payload]
    return [unreadable(element, max_depth) or element for element in objects]


def chunked(items: list[RawItem], size: int) -> Iterator[list[RawItem]]:
    """Split `items` into lists of at most `size`."""
    for start in range(0, len(items), max(size, 1)):
        yield items[start:start + max(size, 1)]
