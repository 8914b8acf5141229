"""Compare two runs source by source, and point out what looks wrong in the second.

`anomalies` compares the two runs with each other; `recorded_anomalies` are what the data-quality rules
(kasparro.pipeline.quality) stored for each run when it ran, against the source's own history.
"""
from __future__ import annotations

from typing import Any

from kasparro.api.schemas import COUNTERS
from kasparro.api.summaries import counts, duration, run_anomalies, run_summary
from kasparro.models import Run, SourceRun

# A source whose loaded rows fall below this share of the baseline is flagged.
DROP_RATIO = 0.5
# ...and one that takes this many times longer.
SLOWDOWN_RATIO = 3.0


def _side(source_run: SourceRun | None) -> dict[str, Any] | None:
    if source_run is None:
        return None
    return {**counts(source_run), "status": source_run.status, "error": source_run.error,
            "duration_seconds": duration(source_run.started_at, source_run.finished_at)}


def _delta(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    if a is None or b is None:
        return None
    delta: dict[str, Any] = {name: b[name] - a[name] for name in COUNTERS}
    both = a["duration_seconds"] is not None and b["duration_seconds"] is not None
    delta["duration_seconds"] = round(b["duration_seconds"] - a["duration_seconds"], 3) if both else None
    return delta


def _anomalies(source: str, a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[dict[str, str]]:
    found: list[tuple[str, str]] = []
    if a is not None and b is None:
        found.append(("missing", "the source ran in a but not in b"))
    if a is not None and b is not None:
        if a["status"] == "success" and b["status"] in ("failed", "partial"):
            found.append(("status_regressed", f"status went from {a['status']} to {b['status']}"))
        if b["rejected"] > a["rejected"]:
            found.append(("more_rejects", f"rejected rows rose from {a['rejected']} to {b['rejected']}"))
        # Incremental runs load only what is new: fewer rows is an anomaly only when the
        # source delivered about as much as before and less of it made it in.
        if a["loaded"] and b["extracted"] >= a["extracted"] * DROP_RATIO and b["loaded"] < a["loaded"] * DROP_RATIO:
            found.append(("volume_drop", f"loaded rows fell from {a['loaded']} to {b['loaded']}"))
        slow_a, slow_b = a["duration_seconds"], b["duration_seconds"]
        if slow_a and slow_b and slow_b > slow_a * SLOWDOWN_RATIO:
            found.append(("slowdown", f"took {slow_b:.1f}s against {slow_a:.1f}s"))
    return [{"source": source, "kind": kind, "message": message} for kind, message in found]


def compare_runs(a: Run, b: Run) -> dict[str, Any]:
    """Return per-source counts of both runs, b minus a, status changes and anomalies."""
    by_source_a = {sr.source: sr for sr in a.source_runs}
    by_source_b = {sr.source: sr for sr in b.source_runs}
    sources, anomalies = [], []
    for name in sorted(set(by_source_a) | set(by_source_b)):
        side_a, side_b = _side(by_source_a.get(name)), _side(by_source_b.get(name))
        changed = side_a is None or side_b is None or side_a["status"] != side_b["status"]
        sources.append({"source": name, "a": side_a, "b": side_b, "delta": _delta(side_a, side_b),
                        "status_changed": changed})
        anomalies += _anomalies(name, side_a, side_b)
    return {"a": run_summary(a), "b": run_summary(b), "sources": sources, "anomalies": anomalies,
            "recorded_anomalies": {"a": run_anomalies(a.id), "b": run_anomalies(b.id)}}
