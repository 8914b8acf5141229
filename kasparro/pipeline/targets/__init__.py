"""Say what a source's validated records become, and dispatch staging and loading to it: quotes or news.

A target is four things: how a record's unified fields are validated, the
staging table its valid records wait in, how a batch's records are staged,
and the one set-based statement that loads a staged batch; optionally a
refresh of what it loaded earlier (news relinks items to assets created since). Transform and load
ask `of_source` / `of_run` for the target and otherwise stay the same for every kind.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from kasparro.models import RawBatch, SourceRun
from kasparro.sources import target_of

Valid = list[tuple[int, dict[str, Any]]]
Stager = Callable[[Session, RawBatch, SourceRun, str, Mapping[tuple[str, str], str], Valid], None]


@dataclass(frozen=True)
class Target:
    """Where one kind of record goes: validate, stage, load."""

    name: str
    stage_table: str
    validate: Callable[[dict[str, Any]], dict[str, Any]]
    stage: Stager
    # Load a staged batch: returns (inserted, updated, staged).
    load: Callable[[Session, int], tuple[int, int, int]]
    # After a load task's batches: bring the source's loaded rows up to date with the world (the caller commits).
    # A source's load tasks run at once, so it must be safe beside another refresh and another load.
    refresh: Callable[[Session, str], int] | None = None


def _targets() -> dict[str, Target]:
    from kasparro.pipeline.targets import news, quotes  # they import this module's Target

    return {"quotes": quotes.TARGET, "news": news.TARGET}


def of_source(source: Any) -> Target:
    """Return the target of a built source (its kind's `target`, "quotes" by default)."""
    return _targets()[getattr(source, "target", "quotes")]


def of_run(source_run: SourceRun) -> Target:
    """Return the target of a source run, from the settings the run was started with."""
    return _targets()[target_of(source_run.run.config.get(source_run.source, {}))]
