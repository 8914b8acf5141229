"""Terminal commands: `flask --app wsgi etl init-db | run | reprocess | sources | reap | status`."""
from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from kasparro import catalog
from kasparro.errors import KasparroError
from kasparro.migrate import init_db
from kasparro.redact import redact_url

etl = AppGroup("etl", help="Run and inspect the ETL pipeline.")


@etl.command("init-db")
def init_db_command() -> None:
    """Create the database if missing and apply every migration."""
    try:
        created = init_db(current_app._get_current_object())  # type: ignore[attr-defined]
    except OperationalError as exc:
        # The driver's first line names the cause (refused, unknown host, bad password); the rest is noise.
        url = make_url(current_app.config["SQLALCHEMY_DATABASE_URI"]).render_as_string(hide_password=True)
        reason = str(exc.orig or exc).strip().splitlines()[0]
        raise click.ClickException(f"cannot reach the database {url}: {reason}") from None
    click.echo(("created database; " if created else "") + "schema is up to date")


@etl.command("sources")
def sources_command() -> None:
    """Show the database in use (password masked), then list the enabled sources and their kinds."""
    click.echo(f"database: {redact_url(current_app.config['SQLALCHEMY_DATABASE_URI'])}")
    for name, spec in catalog.declared_sources(current_app.config).items():
        click.echo(f"{name:24} {spec['kind']:12} {spec.get('path') or spec.get('base_url', '')}")


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


@etl.command("reprocess")
@click.option("--source", required=True, help="The source whose stored raw records to transform and load again.")
@click.option("--run", "run_id", type=int, help="Only the records this run received.")
@click.option("--wait/--no-wait", default=False, help="Follow the run until it finishes.")
@click.option("--timeout", default=600, show_default=True, help="Seconds to wait with --wait.")
def reprocess_command(source: str, run_id: int | None, wait: bool, timeout: int) -> None:
    """Transform and load a source's stored raw records again (no refetch), as a new run with trigger reprocess."""
    from kasparro.tasks import enqueue_reprocess

    try:
        start = enqueue_reprocess(source, run_id)
    except KasparroError as exc:
        raise click.ClickException(str(exc)) from None
    (source_run,) = start.run.source_runs
    click.echo(f"run {start.run.id} queued: reprocess {source}, {source_run.extracted} stored record(s)")
    if wait:
        _follow(start.run.id, timeout)


@etl.command("reap")
def reap_command() -> None:
    """Resume stalled sources now (what beat does every REAPER_INTERVAL_SECONDS)."""
    from kasparro.tasks import reap_stalled

    resumed = reap_stalled.run()
    click.echo(f"resumed {len(resumed)} source run(s)" + (f": {', '.join(map(str, resumed))}" if resumed else ""))


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
