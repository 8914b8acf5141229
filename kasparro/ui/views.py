"""Serve the status page: /, /ui/runs/<id> and /ui/assets/<slug>, each with a live fragment."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Response, current_app, render_template, request
from sqlalchemy import select
from werkzeug.exceptions import HTTPException

from kasparro.api.auth import check_key
from kasparro.api.compare import compare_runs
from kasparro.api.data import asset_detail, find_asset
from kasparro.api.errors import ApiError, handle_unexpected
from kasparro.api.summaries import MAX_ID, get_run, run_detail
from kasparro.db import db
from kasparro.models import Run
from kasparro.ui import charts, overview

bp = Blueprint("ui", __name__)

# Everything the page loads comes from this app; the chart is inline SVG, so its styles are inline too.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
DEFAULT_ASSET = "bitcoin"


def _page(template: str, **context: Any) -> str:
    # ?partial=1 renders only the live part, which live.js swaps into the page every few seconds.
    partial = request.args.get("partial") == "1"
    return _render(f"ui/{'_' if partial else ''}{template}", **context)


def _render(template: str, **context: Any) -> str:
    return render_template(template, now=datetime.now(timezone.utc), **context)


def _chosen_asset(choices: list[str]) -> str | None:
    wanted = request.args.get("asset") or DEFAULT_ASSET
    return wanted if wanted in choices else (choices[0] if choices else None)


@bp.route("/")
def index() -> str:
    """Show a tile per source, the last runs, and one asset's price from every source."""
    choices = overview.asset_choices()
    slug = _chosen_asset(choices)
    chart = charts.price_chart(find_asset(slug).id, slug) if slug else None
    return _page("index.html", tiles=overview.tiles(), runs=overview.timeline(), chart=chart, assets=choices,
                 slug=slug)


def _run_id(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= MAX_ID:
        raise ApiError(404, "not_found", f"no run with id {text}")
    return int(text)


def _previous(run: Run) -> Run | None:
    return db.session.execute(select(Run).where(Run.id < run.id).order_by(Run.id.desc()).limit(1)).scalar()


@bp.route("/ui/runs/<run_id>")
def run_page(run_id: str) -> str:
    """Show one run: per-source counts, errors, progress while running, and what changed since the previous run."""
    run = get_run(_run_id(run_id))
    previous = _previous(run)
    return _page("run.html", run=run_detail(run), comparison=compare_runs(previous, run) if previous else None)


@bp.route("/ui/assets/<slug>")
def asset_page(slug: str) -> str:
    """Show one asset: its aliases per source, the latest quote from each, its chart and news."""
    asset = asset_detail(slug)
    return _page("asset.html", asset=asset, latest=charts.latest_per_source(asset["id"]),
                 chart=charts.price_chart(asset["id"], asset["slug"]), news=asset.get("news") or [])


@bp.app_template_filter("when")
def when(value: datetime | str | None) -> str:
    """Write a timestamp in UTC to the second, or a dash when there is none."""
    if not isinstance(value, datetime):
        return "—" if value is None else str(value)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@bp.app_template_filter("ago")
def ago(value: datetime | None) -> str:
    """Write how long ago a timestamp was (or how far ahead, for a future one)."""
    if value is None:
        return "never"
    seconds = (datetime.now(timezone.utc) - value).total_seconds()
    return f"{overview.ago(seconds)} ago" if seconds >= 0 else f"in {overview.ago(-seconds)}"


@bp.before_request
def _reads_may_need_the_key() -> None:
    # The page shows what the read endpoints show, so it is closed whenever they are.
    if current_app.config.get("READS_REQUIRE_KEY"):
        check_key()


@bp.after_request
def _no_foreign_requests(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.errorhandler(Exception)
def _error_page(exc: Exception) -> tuple[str, int]:
    if isinstance(exc, ApiError):
        status, message = exc.status, exc.message
    elif isinstance(exc, HTTPException):
        status, message = exc.code or 500, exc.description or exc.name
    else:
        # The traceback goes to the log through the API's handler; the page only says sorry.
        handle_unexpected(exc)
        status, message = 500, "an unexpected error occurred; the log has the details"
    return _render("ui/error.html", status=status, message=message), status
