"""Show the ETL at a glance (`flask etl status`), from the functions that answer GET /stats, /sources and /health."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from flask import current_app
from rich.console import Console
from rich.table import Table

from kasparro.api.health import health_report
from kasparro.api.sources import next_scheduled_run, source_overview
from kasparro.api.stats import stats_report

# Without a terminal rich would wrap at 80 columns; a log or a pipe takes the whole table.
PLAIN_WIDTH = 200


def status_report() -> dict[str, Any]:
    """Return the health checks and, when the database answers, /stats, /sources and the schedule."""
    health = health_report()
    if not health["checks"]["database"]["ok"]:
        return {"health": health, "stats": None, "sources": None, "schedule": None}
    schedule = {"interval_seconds": current_app.config["ETL_INTERVAL_SECONDS"], "next_run_at": next_scheduled_run()}
    return {"health": health, "stats": stats_report(), "sources": source_overview(), "schedule": schedule}


def show_status(as_json: bool = False) -> None:
    """Print the status screen (or its figures as JSON); exit 1 when the database is down."""
    report = status_report()
    console = Console()
    if as_json:
        console.out(json.dumps(report, default=_iso, indent=2), highlight=False)
    else:
        if not console.is_terminal:
            console = Console(width=PLAIN_WIDTH)
        render(report, console)
    if report["health"]["status"] == "down":
        raise SystemExit(1)


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def ago(seconds: float | None) -> str:
    """Say how long ago in the largest two units ("3m 05s", "2h 10m", "4d 1h"); "never" for None."""
    if seconds is None:
        return "never"
    whole = int(seconds)
    days, hours, minutes, secs = whole // 86400, whole // 3600 % 24, whole // 60 % 60, whole % 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def render(report: dict[str, Any], console: Console) -> None:
    """Draw the sources table, the schedule and one line per health check."""
    now = datetime.now(timezone.utc)
    console.print(f"Kasparro ETL status at {now:%Y-%m-%d %H:%M:%S} UTC: health {report['health']['status']}",
                  highlight=False)
    if report["stats"] is not None:
        console.print(sources_table(report["stats"], report["sources"]))
        console.print(schedule_line(report["schedule"], now), highlight=False)
    for name, check in report["health"]["checks"].items():
        console.print(health_line(name, check), highlight=False, markup=False)


def sources_table(stats: dict[str, Any], sources: list[dict[str, Any]]) -> Table:
    """Tabulate every declared source (and any that ran but is no longer declared) with its last run and freshness."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("source", "kind", "last run", "status", "freshness", "last run rows", "rows total", "rejects total"):
        table.add_column(column, no_wrap=True)
    table.add_column("last error", overflow="ellipsis", no_wrap=True, max_width=60)
    found = {row["source"]: row for row in stats["sources"]}
    kinds = {entry["name"]: entry["kind"] + ("" if entry["enabled"] else " (disabled)") for entry in sources}
    for name in sorted(set(kinds) | set(found)):
        row = found.get(name)
        kind = kinds.get(name, "(not declared)")
        if row is None or row.get("last_run_id") is None:
            table.add_row(name, kind, "-", "never run", "never", "-", "0", "0", "")
            continue
        last = row["last_run"]
        fresh = f"{ago(row['freshness_seconds'])} ago" if row["freshness_seconds"] is not None else "never succeeded"
        table.add_row(name, kind, f"#{row['last_run_id']}", row["last_run_status"],
                      f"{'STALE ' if row['stale'] else ''}{fresh}",
                      f"read={last['extracted']} loaded={last['loaded']} rejected={last['rejected']}",
                      str(row["rows_total"]), str(row["rejected_total"]), first_line(row["last_error"]))
    return table


def first_line(text: str | None) -> str:
    """Return the first line of an error, or nothing."""
    return (text or "").strip().split("\n", 1)[0]


def schedule_line(schedule: dict[str, Any], now: datetime) -> str:
    """Say how often beat starts a run and when it will start the next, as beat last published it."""
    line = f"schedule: every {ago(schedule['interval_seconds'])}"
    if schedule["next_run_at"] is None:
        return line + "; next run unknown: beat has not published it (see the beat check)"
    due = (schedule["next_run_at"] - now).total_seconds()
    return line + f"; next run at {schedule['next_run_at']:%Y-%m-%d %H:%M:%S} UTC (in {ago(max(due, 0))})"


def health_line(name: str, check: dict[str, Any]) -> str:
    """Describe one health check in a line: ok or FAILING, why, and what it found."""
    details = check.get("details") or {}
    found = {"workers": lambda: ", ".join(details.get("workers", [])),
             "beat": lambda: f"last seen {ago(details['age_seconds'])} ago" if "age_seconds" in details else "",
             "last_run": lambda: f"run {details.get('run_id')} {details.get('status')}" if details else ""}
    note = found[name]() if name in found else ""
    state = "ok" if check["ok"] else f"FAILING ({check['severity']}): {check['error']}"
    return f"{name:<10} {state}" + (f"  {note}" if note else "") + f"  [{check['latency_ms']:.0f} ms]"
