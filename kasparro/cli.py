"""Terminal commands: `flask --app wsgi etl init-db | run | backfill | reprocess | replay-rejects | sources | reap | status`."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import click
from click.core import ParameterSource
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from kasparro import catalog
from kasparro.errors import KasparroError
from kasparro.migrate import init_db
from kasparro.pipeline.preview import MAX_RECORDS
from kasparro.pipeline.runs import RunStart
from kasparro.redact import redact_url
from kasparro.sources.window import as_utc

etl = AppGroup("etl", help="Run and inspect the ETL pipeline.")


@etl.command("init-db")
def init_db_command() -> None:
    """Create the database if missing and apply every migration."""
    try:
        created = init_db(current_app._get_current_object())  # type: ignore[attr-defined]
    except OperationalError as exc:
        raise _unreachable(exc) from None
    click.echo(("created database; " if created else "") + "schema is up to date")


def _unreachable(exc: OperationalError) -> click.ClickException:
    """Say in one line which database could not be reached, and why."""
    # The driver's first line names the cause (refused, unknown host, bad password); the rest is noise.
    url = make_url(current_app.config["SQLALCHEMY_DATABASE_URI"]).render_as_string(hide_password=True)
    reason = str(exc.orig or exc).strip().splitlines()[0]
    return click.ClickException(f"cannot reach the database {url}: {reason}")


@etl.command("sources")
@click.option("--check", "name", metavar="NAME",
              help="Read the first page of source NAME (enabled or not) and show it mapped, validated and "
                   "resolved, writing nothing.")
@click.option("--records", default=5, show_default=True, type=click.IntRange(1, MAX_RECORDS),
              help="Records to show with --check.")
@click.option("--json", "as_json", is_flag=True, help="With --check: print the check as one JSON document.")
def sources_command(name: str | None, records: int, as_json: bool) -> None:
    """Show the database in use (password masked), then list the enabled sources and their kinds."""
    if name is not None:
        _check(name, records, as_json)
        return
    given = click.get_current_context().get_parameter_source
    if as_json or given("records") is not ParameterSource.DEFAULT:
        raise click.UsageError("--records and --json go with --check NAME")
    click.echo(f"database: {redact_url(current_app.config['SQLALCHEMY_DATABASE_URI'])}")
    for name, spec in catalog.declared_sources(current_app.config).items():
        click.echo(f"{name:24} {spec['kind']:12} {spec.get('path') or spec.get('base_url', '')}")


def _check(name: str, records: int, as_json: bool) -> None:
    from kasparro.source_check import scrub, show_check

    try:
        show_check(name, records, as_json)
    except KasparroError as exc:
        raise click.ClickException(scrub(str(exc), current_app.config["SECRETS"].values())) from None
    except OperationalError as exc:
        raise _unreachable(exc) from None


@etl.command("run")
@click.option("--source", "sources", multiple=True, help="Run only this source (repeatable).")
@click.option("--wait/--no-wait", default=False, help="Follow the run until it finishes.")
@click.option("--timeout", default=600, show_default=True, help="Seconds to wait with --wait.")
def run_command(sources: tuple[str, ...], wait: bool, timeout: int) -> None:
    """Queue a run (all enabled sources by default) and optionally follow its progress."""
    from kasparro.tasks import enqueue_run

    try:
        start = enqueue_run("cli", sources or None)
    except KasparroError as exc:
        raise click.ClickException(str(exc)) from None
    run = start.run
    click.echo(f"run {run.id} {'queued' if start.created else 'already active'}: {', '.join(run.sources)}")
    for source, holder in sorted(start.busy.items()):
        click.echo(f"  {source}: busy, held by run {holder}")
    if wait:
        _follow(run.id, timeout)


class Instant(click.ParamType):
    """An ISO-8601 date or time on the command line; without an offset it is UTC."""

    name = "ISO-8601"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        """Parse the value, or fail naming the option."""
        if isinstance(value, datetime):
            return value
        try:
            return as_utc(value)
        except ValueError:
            self.fail(f"{value!r} is not an ISO-8601 date or time (e.g. 2026-01-01 or 2026-01-01T12:00:00Z)",
                      param, ctx)


def _repair(enqueue: Callable[[], RunStart], what: str, wait: bool, timeout: int) -> None:
    """Start a repair run, say what it covers (or who holds its sources), and optionally follow it."""
    try:
        start = enqueue()
    except KasparroError as exc:
        raise click.ClickException(str(exc)) from None
    if not start.created:
        held = "; ".join(f"{s}: busy, held by run {r}" for s, r in sorted(start.busy.items()))
        raise click.ClickException(f"{held}; try again once it ends")
    parts = ", ".join(f"{s.source}, {s.extracted} stored record(s)" if start.run.trigger != "backfill" else s.source
                      for s in start.run.source_runs)
    click.echo(f"run {start.run.id} queued: {what} {parts}")
    for source, holder in sorted(start.busy.items()):
        click.echo(f"  {source}: busy, held by run {holder}")
    if wait:
        _follow(start.run.id, timeout)


WAIT = click.option("--wait/--no-wait", default=False, help="Follow the run until it finishes.")
TIMEOUT = click.option("--timeout", default=600, show_default=True, help="Seconds to wait with --wait.")
SINCE = click.option("--since", type=Instant(), help="Only records received (or rejected) at or after this time.")


@etl.command("backfill")
@click.option("--source", required=True, help="The source to read a past window from (CSV or CoinGecko).")
@click.option("--start", "start_at", required=True, type=Instant(), help="Start of the window (included).")
@click.option("--end", "end_at", required=True, type=Instant(), help="End of the window (included).")
@click.option("--coins", help="Comma-separated asset ids of the source to backfill (default: its whole listing).")
@WAIT
@TIMEOUT
def backfill_command(source: str, start_at: datetime, end_at: datetime, coins: str | None, wait: bool,
                     timeout: int) -> None:
    """Load a past window from a source without moving its checkpoint, as a run with trigger backfill."""
    from kasparro.tasks import enqueue_backfill

    wanted = [c.strip() for c in (coins or "").split(",") if c.strip()]
    _repair(lambda: enqueue_backfill(source, start_at, end_at, wanted),
            f"backfill {start_at.isoformat()}..{end_at.isoformat()}", wait, timeout)


@etl.command("reprocess")
@click.option("--source", required=True, help="The source whose stored raw records to transform and load again.")
@click.option("--run", "run_id", type=int, help="Only the records this run received.")
@SINCE
@WAIT
@TIMEOUT
def reprocess_command(source: str, run_id: int | None, since: datetime | None, wait: bool, timeout: int) -> None:
    """Transform and load a source's stored raw records again (no refetch), as a new run with trigger reprocess."""
    from kasparro.tasks import enqueue_reprocess

    _repair(lambda: enqueue_reprocess(source, run_id, since), "reprocess", wait, timeout)


@etl.command("replay-rejects")
@click.option("--source", help="Only this source's rejects (default: every source with some).")
@click.option("--run", "run_id", type=int, help="Only the records this run rejected.")
@SINCE
@WAIT
@TIMEOUT
def replay_command(source: str | None, run_id: int | None, since: datetime | None, wait: bool, timeout: int) -> None:
    """Retry rejected records after a fix, as a run with trigger replay; each reject records the outcome."""
    from kasparro.tasks import enqueue_replay

    _repair(lambda: enqueue_replay(source, run_id, since), "replay", wait, timeout)


@etl.command("reap")
def reap_command() -> None:
    """Resume stalled sources now (what beat does every REAPER_INTERVAL_SECONDS)."""
    from kasparro.tasks import reap_stalled

    resumed = reap_stalled.run()
    click.echo(f"resumed {len(resumed)} source run(s)" + (f": {', '.join(map(str, resumed))}" if resumed else ""))


@etl.command("partitions")
def partitions_command() -> None:
    """Make market_quotes' partitions ahead, move DEFAULT's rows into theirs, drop expired months (beat does it daily)."""
    from kasparro.tasks import maintain_partitions

    done = maintain_partitions.run()
    click.echo(f"made {len(done['created'])} partition(s), moved {done['moved']} row(s) out of the default one, "
               f"dropped {len(done['dropped'])}" + "".join(f"\n  {verb} {name}" for verb, names in
                                                            (("made", done["created"]), ("dropped", done["dropped"]))
                                                            for name in names))


def _follow(run_id: int, timeout: int) -> None:
    from kasparro.follow import follow

    follow(run_id, timeout)


@etl.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON document instead.")
def status_command(as_json: bool) -> None:
    """Show on one screen each source's last run, freshness and rejects, the schedule, and the system's health."""
    from kasparro.status import show_status

    show_status(as_json)


def init_app(app: Flask) -> None:
    """Register the `etl` command group."""
    app.cli.add_command(etl)
