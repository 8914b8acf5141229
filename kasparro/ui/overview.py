"""Gather the front page's figures from the API's own queries: tiles per source and the last runs."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select

from kasparro.api.sources import source_overview
from kasparro.api.stats import source_stats
from kasparro.api.summaries import run_anomalies, run_summary
from kasparro.db import db
from kasparro.models import Asset, Run

TIMELINE_RUNS = 50
# A source is fresh while its last success is younger than this many schedule intervals.
FRESH_INTERVALS = 2


def freshness(last_success_at: datetime | None, schedule_seconds: int | None,
              now: datetime | None = None) -> dict[str, Any]:
    """Say whether a source's data is as recent as its schedule promises."""
    if schedule_seconds is None:
        return {"state": "unscheduled", "text": "not scheduled (disabled)"}
    if last_success_at is None:
        return {"state": "stale", "text": "never loaded successfully"}
    age = ((now or datetime.now(timezone.utc)) - last_success_at).total_seconds()
    state = "fresh" if age <= FRESH_INTERVALS * schedule_seconds else "stale"
    return {"state": state, "text": f"{state}: last success {ago(age)} ago, runs every {ago(schedule_seconds)}"}


def ago(seconds: float) -> str:
    """Write a duration the way people read it: 45 s, 12 min, 3 h, 2 d."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{max(seconds, 0):.0f} s"


def _findings(run_ids: set[int]) -> Counter[tuple[int, str]]:
    found: Counter[tuple[int, str]] = Counter()
    for run_id in run_ids:
        found.update((run_id, finding["source"]) for finding in run_anomalies(run_id))
    return found


def tiles() -> list[dict[str, Any]]:
    """Return one tile per declared source: last run, freshness, rows, rejects, drift, findings, waits."""
    stats = {row["source"]: row for row in source_stats()}
    overview = source_overview(stats)
    findings = _findings({entry["last_run"]["run_id"] for entry in overview if entry["last_run"]})
    result = []
    for entry in overview:
        figures = stats.get(entry["name"], {})
        last = entry["last_run"]
        result.append({**entry, "stats": figures,
                       "freshness": freshness(last and last["last_success_at"], entry["schedule_seconds"]),
                       "findings": findings[(last["run_id"], entry["name"])] if last else 0})
    return result


def timeline(limit: int = TIMELINE_RUNS) -> list[dict[str, Any]]:
    """Return the last runs, newest first."""
    runs = db.session.execute(select(Run).order_by(Run.id.desc()).limit(limit)).scalars()
    return [run_summary(run) for run in runs]


def asset_choices() -> list[str]:
    """Return every asset's slug, for the chart's picker."""
    return list(db.session.execute(select(Asset.slug).order_by(Asset.slug)).scalars())
