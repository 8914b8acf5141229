"""Follow a run from a terminal: a progress bar per source, or plain periodic lines when output is not a terminal.

Both read what GET /runs/<id> serves (`kasparro.api.summaries.run_progress`), so
the bars, the lines and the API always agree.
"""
from __future__ import annotations

import time
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.table import Column
from sqlalchemy import select

from kasparro.api.summaries import run_progress
from kasparro.db import db
from kasparro.models import Run, RunEvent

POLL_SECONDS = 1.0
# Without a terminal (CI, a pipe) a line per source is printed when its figures changed, at most this often.
PLAIN_EVERY_SECONDS = 5.0
FINISHED = ("success", "partial", "failed")


def figures(source_run: dict[str, Any]) -> str:
    """Describe one source's part of a run in a line: status, stage, batches, rows, read progress and ETA."""
    p = source_run["progress"]
    line = (f"{source_run['status']}/{p['stage']} batches={p['batches_loaded']}/{p['batches_extracted']} "
            f"extracted={source_run['extracted']} loaded={source_run['loaded']} rejected={source_run['rejected']}")
    if p["total"] is not None:
        line += f" read={p['percent']:.0f}% of {p['total']} {p['unit']}"
    if p["eta_seconds"] is not None:
        line += f" eta={p['eta_seconds']:.0f}s"
    return line


def headline(run: dict[str, Any]) -> str:
    """Describe a run in one line: its status and each source's counters."""
    return f"run {run['id']} {run['status']}: " + "; ".join(
        f"{s['source']} {s['status']}{'/' + s['stage'] if s['stage'] else ''} extracted={s['extracted']} "
        f"loaded={s['loaded']} rejected={s['rejected']}" for s in run["source_runs"])


def snapshot(run_id: int) -> dict[str, Any]:
    """Read the run afresh, as /runs/<id> shows it."""
    db.session.expire_all()
    run = db.session.get(Run, run_id)
    if run is None:
        raise click.ClickException(f"run {run_id} is gone")
    return run_progress(run)


def new_events(run_id: int, after: int) -> list[RunEvent]:
    """Return the run's events newer than id `after`, oldest first."""
    return list(db.session.execute(
        select(RunEvent).where(RunEvent.run_id == run_id, RunEvent.id > after).order_by(RunEvent.id)
    ).scalars())


def event_line(event: RunEvent) -> str:
    """Describe a run event (a retry, a wait, a lost worker, a failure) in a line."""
    return f"  [{event.kind}] {event.source} {event.stage or ''}: {event.detail}"


class PlainView:
    """Print the run's events, and a line per source whose figures changed, at most every PLAIN_EVERY_SECONDS."""

    def __init__(self) -> None:
        self.shown: dict[str, str] = {}
        self.last_print = 0.0

    def event(self, event: RunEvent) -> None:
        """Print one event."""
        click.echo(event_line(event))

    def update(self, run: dict[str, Any], final: bool = False) -> None:
        """Print the figures of each source that changed since last shown."""
        if not final and time.monotonic() - self.last_print < PLAIN_EVERY_SECONDS:
            return
        for source_run in run["source_runs"]:
            line = figures(source_run)
            if self.shown.get(source_run["source"]) != line:
                click.echo(f"  {source_run['source']}: {line}")
                self.shown[source_run["source"]] = line
        self.last_print = time.monotonic()

    def close(self) -> None:
        """Nothing to tidy: every line is already out."""


class BarView:
    """Draw one progress bar per source, redrawn in place; events print above the bars."""

    def __init__(self, console: Console) -> None:
        # The bar keeps its width; on a narrow terminal the figures are cut short instead.
        figures_column = Column(no_wrap=True, overflow="ellipsis", ratio=1)
        self.bars = Progress(TextColumn("{task.description}", table_column=Column(no_wrap=True, max_width=24)),
                             BarColumn(bar_width=24), TaskProgressColumn(),
                             TextColumn("{task.fields[figures]}", table_column=figures_column),
                             console=console, auto_refresh=False, expand=True)
        self.tasks: dict[str, TaskID] = {}
        self.bars.start()

    def event(self, event: RunEvent) -> None:
        """Print one event above the bars."""
        self.bars.console.print(event_line(event), markup=False, highlight=False)

    def update(self, run: dict[str, Any], final: bool = False) -> None:
        """Move each source's bar to its units read of the total (a pulsing bar while the total is unknown)."""
        for source_run in run["source_runs"]:
            name, p = source_run["source"], source_run["progress"]
            if name not in self.tasks:
                self.tasks[name] = self.bars.add_task(name, total=None, figures="")
            # Without a known total the bar pulses, and fills when the source ends well.
            ended_well = p["stage"] == "done" and source_run["status"] != "failed"
            total = p["total"] if p["total"] is not None else (1 if p["stage"] == "done" else None)
            completed = p["done"] if p["done"] is not None else (1 if ended_well else 0)
            self.bars.update(self.tasks[name], total=total, completed=completed, figures=figures(source_run))
        self.bars.refresh()

    def close(self) -> None:
        """Stop redrawing, leaving the last bars on screen."""
        self.bars.stop()


def follow(run_id: int, timeout: float) -> None:
    """Show the run's progress until it finishes; exit non-zero, naming each failed source and why, if any failed."""
    console = Console()
    view: PlainView | BarView = BarView(console) if console.is_terminal else PlainView()
    deadline, seen = time.monotonic() + timeout, 0
    try:
        while True:
            for event in new_events(run_id, seen):
                view.event(event)
                seen = event.id
            run = snapshot(run_id)
            finished = run["status"] in FINISHED
            view.update(run, final=finished)
            if finished or time.monotonic() > deadline:
                break
            time.sleep(POLL_SECONDS)
    finally:
        view.close()
    click.echo(headline(run))
    if not finished:
        raise click.ClickException(f"run {run_id} still {run['status']} after {timeout:.0f}s")
    report_failures(run)


def report_failures(run: dict[str, Any]) -> None:
    """Print each source's error; exit 1 if the run failed or any of its sources did."""
    for source_run in run["source_runs"]:
        if source_run["error"]:
            click.echo(f"  {source_run['source']} {source_run['status']}: {source_run['error']}", err=True)
    failed = [s["source"] for s in run["source_runs"] if s["status"] == "failed"]
    if run["status"] == "failed" or failed:
        click.echo(f"run {run['id']} {run['status']}: failed source(s): {', '.join(failed)}", err=True)
        raise SystemExit(1)
