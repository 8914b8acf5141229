"""Start runs and follow them: POST /run-etl and /runs, GET /runs, /runs/<id>, /runs/compare."""
from __future__ import annotations

import functools
from typing import Any

from flask import request, url_for
from sqlalchemy import select

from kasparro.api.auth import key_required, read_access
from kasparro.api.base import Blueprint, newest_first
from kasparro.api.compare import compare_runs
from kasparro.api.envelope import single
from kasparro.api.errors import ApiError
from kasparro.api.params import CompareParams, NoParams, RunHeaders, RunParams, RunRequest
from kasparro.api.schemas import ComparisonSchema, RunCreatedSchema, RunDetailSchema, RunSchema, envelope
from kasparro.api.summaries import get_run, run_detail, run_summary
from kasparro.db import db
from kasparro.errors import BrokerUnavailable, SourceConfigError
from kasparro.models import Run
from kasparro.tasks import RunStart, enqueue_run

blp = Blueprint("runs", __name__, description="ETL runs: start them, follow them, compare them.")

CREATED = envelope(RunCreatedSchema, "RunCreatedResponse")
LOCATION = {"Location": {"description": "Where to poll the run: /runs/{id}.", "schema": {"type": "string"}}}


def _start(body: dict[str, Any], headers: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    sources = body.get("sources")
    try:
        start = enqueue_run("api", sources, headers.get("idempotency_key"))
    except BrokerUnavailable:
        raise broker_unavailable() from None
    except SourceConfigError as exc:
        db.session.rollback()
        if sources is None:
            raise
        raise ApiError(400, "validation_error", f"sources: {exc.message}", {"sources": [exc.message]}) from None
    return answer(start)


def broker_unavailable() -> ApiError:
    """Roll back and describe a broker that could not take the run: 503, nothing recorded."""
    db.session.rollback()
    return ApiError(503, "broker_unavailable", "the task broker is unreachable; no run was recorded, try again later",
                    headers={"Retry-After": "30"})


def answer(start: RunStart) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Describe a trigger's outcome: 202 with the new run, or 200 with the run holding every source asked for."""
    run = start.run
    busy = [{"source": source, "run_id": run_id} for source, run_id in sorted(start.busy.items())]
    data = {"run_id": run.id, "status": run.status, "sources": list(run.sources), "created": start.created,
            "busy": busy}
    return single(data), 202 if start.created else 200, {"Location": url_for("runs.get_run_detail", run_id=run.id)}


def json_only(view: Any) -> Any:
    """Refuse a request body that is not JSON, rather than silently reading it as 'no sources'."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if request.get_data(cache=True) and not request.is_json:
            raise ApiError(415, "unsupported_media_type", "send the body as application/json")
        return view(*args, **kwargs)

    return wrapper


def _post_docs(view: Any) -> Any:
    # Applied inside out: the view receives the body first, then the headers.
    view = blp.arguments(RunHeaders, location="headers")(view)
    view = blp.arguments(RunRequest, location="json", required=False)(view)
    view = blp.response(202, CREATED, headers=LOCATION, description="A new run was queued.")(view)
    view = blp.alt_response(200, schema=CREATED, headers=LOCATION, success=True,
                            description="Every source asked for is held by an active run (the oldest "
                                        "such run is returned, `busy` names each holder), or this "
                                        "Idempotency-Key was seen before: that run is returned.")(view)
    return json_only(blp.errors(400, 401, 415, 503)(blp.protected()(view)))


@blp.route("/run-etl", methods=["POST"])
@key_required
@_post_docs
def run_etl(body: dict[str, Any], headers: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Queue an ETL run over all enabled sources or the ones named; 202 when queued, 200 when reused."""
    return _start(body, headers)


@blp.route("/runs", methods=["POST"])
@key_required
@_post_docs
def create_run(body: dict[str, Any], headers: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Queue an ETL run (same as POST /run-etl)."""
    return _start(body, headers)


@blp.route("/runs", methods=["GET"])
@read_access
@blp.arguments(RunParams, location="query")
@blp.response(200, envelope(RunSchema, "RunPage", many=True))
@blp.errors(400, 401)
def list_runs(params: dict[str, Any]) -> dict[str, Any]:
    """List runs, newest first, optionally by status and trigger."""
    filters = {"status": params.get("status"), "trigger": params.get("trigger")}
    query = select(Run)
    if filters["status"]:
        query = query.where(Run.status == filters["status"])
    if filters["trigger"]:
        query = query.where(Run.trigger == filters["trigger"])
    return newest_first("runs", query, Run.id, filters, params, scalars=True, convert=run_summary)


@blp.route("/runs/compare")
@read_access
@blp.arguments(CompareParams, location="query")
@blp.response(200, envelope(ComparisonSchema, "RunComparisonResponse"))
@blp.errors(400, 401, 404)
def compare(params: dict[str, Any]) -> dict[str, Any]:
    """Compare two runs source by source: counts, deltas, durations, status changes and anomalies."""
    return single(compare_runs(get_run(params["a"]), get_run(params["b"])))


@blp.route("/runs/<int:run_id>")
@read_access
@blp.arguments(NoParams, location="query")
@blp.response(200, envelope(RunDetailSchema, "RunResponse"))
@blp.errors(400, 401, 404)
def get_run_detail(_: dict[str, Any], run_id: int) -> dict[str, Any]:
    """Show one run with each source's status, stage, counters, rate-limit evidence and progress."""
    return single(run_detail(get_run(run_id)))
