"""Rules over a source's run history: volume (rows read) and slow_run (duration), each against a median.

The rules are pure functions of the numbers; `recent_runs` reads the history they compare with.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import median

from sqlalchemy import text
from sqlalchemy.orm import Session

from kasparro.models import REPAIR_TRIGGERS, SUCCEEDED, SourceRun
from kasparro.pipeline.quality.base import Finding, Thresholds

# The source's last finished runs before this one, newest first (index run_sources (source, id)).
# Repair runs read a window or stored records, not what the schedule reads: they are no baseline.
_RECENT = text(
    """
    SELECT s.extracted, extract(epoch FROM s.finished_at - s.started_at) AS seconds
    FROM run_sources s JOIN runs r ON r.id = s.run_id
    WHERE s.source = :source AND s.id < :id AND s.status = ANY(:succeeded) AND s.finished_at IS NOT NULL
      AND r.trigger <> ALL(:repair)
    ORDER BY s.id DESC LIMIT :n
    """
)


@dataclass(frozen=True)
class History:
    """Rows read and seconds taken by a source's recent successful runs."""

    rows: list[int]
    seconds: list[float]


def recent_runs(session: Session, source_run: SourceRun, n: int) -> History:
    """Return the rows and durations of the source's last `n` successful runs before `source_run`."""
    found = session.execute(_RECENT, {"source": source_run.source, "id": source_run.id,
                                      "succeeded": list(SUCCEEDED), "n": n,
                                      "repair": list(REPAIR_TRIGGERS)}).all()
    return History([row.extracted for row in found], [float(row.seconds) for row in found if row.seconds is not None])


def volume(source: str, rows: int, history: list[int], limits: Thresholds) -> Finding | None:
    """Flag a run that read far fewer or far more rows than the median of the source's recent runs.

    Needs `min_history` runs, and a median above zero: an incremental source that usually reads
    nothing new gives no baseline to compare with.
    """
    if len(history) < limits.min_history:
        return None
    baseline = float(median(history))
    if baseline <= 0:
        return None
    factor = limits.volume_factor
    if rows < baseline / factor:
        return Finding("volume", source, "critical", f"read {rows} rows, below 1/{factor:g} of the median "
                       f"{baseline:g} of its last {len(history)} runs", rows, baseline)
    if rows > baseline * factor:
        return Finding("volume", source, "warning", f"read {rows} rows, over {factor:g}x the median "
                       f"{baseline:g} of its last {len(history)} runs", rows, baseline)
    return None


def slow_run(source: str, seconds: float | None, history: list[float], limits: Thresholds) -> Finding | None:
    """Flag a run that took over `slow_factor` times the median duration of recent runs (and at least
    `slow_min_seconds`, so a run of a few seconds never counts as slow)."""
    if seconds is None or len(history) < limits.min_history or seconds < limits.slow_min_seconds:
        return None
    baseline = float(median(history))
    if seconds <= baseline * limits.slow_factor:
        return None
    return Finding("slow_run", source, "warning", f"took {seconds:.1f}s, over {limits.slow_factor:g}x the median "
                   f"{baseline:.1f}s of its last {len(history)} runs", round(seconds, 3), round(baseline, 3))
