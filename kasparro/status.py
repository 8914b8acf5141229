"""Show the ETL at a glance (`flask etl status`), from the functions that answer GET /stats and GET /health."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from flask import current_app
from rich.console import Console
from rich.table import Table

from kasparro import catalog
from kasparro.api.health import health_report
from kasparro.api.stats import stats_report

# Without a terminal rich would wrap at 80 columns; a log or a pipe takes the whole table.
PLAIN_WIDTH = 200


def status_report() -> dict[str, Any]:
    """Return the health checks, /stats (when the database answers) and the declared sources."""
    health = health_report()
    stats = stats_report() if health["checks"]["database"]["ok"] else None
    declared = {name: spec["kind"] for name, spec in catalog.declared_sources(current_app.config).items()}
    return {"health": health, "stats": stats, "declared": declared}


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
        console.print(sources_table(report["stats"], report["declared"]))
        console.print(schedule_line(report["stats"]["schedule"], now), highlight=False)
    for name, check in report["health"]["checks"].items():
        console.print(health_line(name, check), highlight=False, markup=False)


def sources_table(stats: dict[str, Any], declared: dict[str, str]) -> Table:
    """Tabulate every declared source (and any that ran but is no longer declared) with its last run and freshness."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("source", "kind", "last run", "status", "freshness", "last run rows", "rows total", "rejects total"):
        table.add_column(column, no_wrap=True)
    table.add_column("last error", overflow="ellipsis", no_wrap=True, max_width=60)
    found = {row["source"]: row for row in stats["sources"]}
    for name in sorted(set(declared) | set(found)):
        row = found.get(name)
        kind = declared.get(name, "(not declared)")
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
    """Say how often beat starts a run, when it last did and when the next is due."""
    line = f"schedule: every {ago(schedule['interval_seconds'])}"
    if schedule["last_at"] is None:
        return line + "; beat has started no run yet (it starts one as it starts)"
    due = (schedule["next_at"] - now).total_seconds()
    when = f"in {ago(due)}" if due >= 0 else f"overdue by {ago(-due)}"
    return line + f"; last {schedule['last_at']:%Y-%m-%d %H:%M:%S}; next {schedule['next_at']:%H:%M:%S} ({when})"


def health_line(name: str, check: dict[str, Any]) -> str:
    """Describe one health check in a line: ok or FAILING, why, and what it found."""
    details = check.get("details") or {}
    found = {"workers": lambda: ", ".join(details.get("workers", [])),
             "beat": lambda: f"last seen {ago(details['age_seconds'])} ago" if "age_seconds" in details else "",
             "last_run": lambda: f"run {details.get('run_id')} {details.get('status')}" if details else ""}
    note = found[name]() if name in found else ""
    state = "ok" if check["ok"] else f"FAILING ({check['severity']}): {check['error']}"
    return f"{name:<10} {state}" + (f"  {note}" if note else "") + f"  [{check['latency_ms']:.0f} ms]"
