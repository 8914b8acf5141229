"""Describe a past time window to backfill, and decide which records fall in it.

A source that can backfill has `window_pages(window, cursor, page_size)`: it
yields the records observed in the window (`start` and `end` included),
whatever its incremental checkpoint says. Its pages carry a cursor of their
own, so a backfill resumed after a crash continues after its last batch.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from kasparro.sources.base import Page


@dataclass(frozen=True)
class Window:
    """A closed time range to backfill, optionally narrowed to some of the source's asset ids."""

    start: datetime
    end: datetime
    coins: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Window:
        """Read a window from a run's stored settings (ISO-8601 `start`, `end`, a list of `coins`)."""
        return cls(as_utc(settings["start"]), as_utc(settings["end"]), tuple(settings.get("coins") or ()))

    def settings(self) -> dict[str, Any]:
        """Return the window as JSON-ready settings, the form a run stores."""
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "coins": list(self.coins)}

    def holds(self, asset: Any, observed: Any) -> bool:
        """Return whether a record of `asset` observed at `observed` belongs to the window."""
        when = observed if isinstance(observed, datetime) else parse_observed(observed)
        if when is None or (self.coins and asset not in self.coins):
            return False
        return self.start <= as_utc(when) <= self.end


def as_utc(value: datetime | str) -> datetime:
    """Return an aware UTC datetime; a naive one (or an ISO string without offset) is taken as UTC."""
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.astimezone(timezone.utc) if when.tzinfo else when.replace(tzinfo=timezone.utc)


def parse_observed(value: Any) -> datetime | None:
    """Parse an ISO-8601 observation time, or return None."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return as_utc(value.strip())
    except ValueError:
        return None


class Windowed(Protocol):
    """A source that can read a past window."""

    def window_pages(self, window: Window, cursor: Mapping[str, Any] | None, page_size: int) -> Iterator[Page]:
        """Yield pages of the records observed in `window`, resuming after `cursor` (a page's own cursor)."""
        ...
