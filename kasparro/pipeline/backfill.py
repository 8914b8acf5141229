"""Load a past window from a source that can read one, without moving its incremental checkpoint.

A backfill is an ordinary run (extract | transform | load) with trigger
`backfill` whose stored settings carry the window (`backfill`: start, end,
coins). Its extract reads `window_pages` instead of reading on from the
checkpoint, and its load leaves the checkpoint where the incremental runs put
it. Records already stored are duplicates and quotes already loaded are
skipped, so a second backfill of the same window changes nothing.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from kasparro.errors import RepairRefused
from kasparro.pipeline import runs
from kasparro.sources.window import Window

# Where a backfill run keeps its window in the source's stored settings.
WINDOW_KEY = "backfill"


def window_of(spec: Mapping[str, Any]) -> Window | None:
    """Return the window a run's settings for a source ask to backfill, or None for an incremental read."""
    settings = spec.get(WINDOW_KEY)
    return Window.from_settings(settings) if settings else None


def check(source: str, spec: Mapping[str, Any], window: Window, able: Sequence[str]) -> None:
    """Refuse a window that ends before it starts, or a source not among those that can backfill (`able`)."""
    if window.start > window.end:
        raise RepairRefused(f"start {window.start.isoformat()} is after end {window.end.isoformat()}", source=source)
    if source not in able:
        raise RepairRefused(f"a {spec['kind']} source cannot backfill; sources that can: {', '.join(able) or 'none'}",
                            source=source)


def stage_backfill(session: Session, source: str, spec: Mapping[str, Any], window: Window,
                   able: Sequence[str]) -> runs.RunStart:
    """Record a backfill run of `source` over `window` (the caller commits and dispatches)."""
    check(source, spec, window, able)
    return runs.create_run(session, "backfill", {source: {**spec, WINDOW_KEY: window.settings()}})
