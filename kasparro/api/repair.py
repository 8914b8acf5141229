"""Repair data after a bad day: POST /backfill, /reprocess and /replay-rejects, each a run like POST /run-etl.

Each answers like POST /run-etl: 202 with the new run and `Location: /runs/<id>`,
or 200 with `created: false` and `busy` when another run holds the source. A
body that does not validate (a source that cannot backfill included) is 422
with the fields named; a reprocess or replay with no stored record to work on is 409.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kasparro.api.auth import key_required
from kasparro.api.base import Blueprint
from kasparro.api.errors import ApiError
from kasparro.api.params import BackfillRequest, ReplayRequest, ReprocessRequest
from kasparro.api.runs import CREATED, LOCATION, answer, broker_unavailable, json_only
from kasparro.db import db
from kasparro.errors import BrokerUnavailable, NothingToRepair, RepairRefused, SourceConfigError
from kasparro.tasks import RunStart, enqueue_backfill, enqueue_replay, enqueue_reprocess

blp = Blueprint("repair", __name__, description="Repair runs: backfill a past window, reprocess stored records, "
                                                "replay rejects.")

Answer = tuple[dict[str, Any], int, dict[str, str]]


def _repair(enqueue: Callable[[], RunStart]) -> Answer:
    try:
        return answer(enqueue())
    except BrokerUnavailable:
        raise broker_unavailable() from None
    except NothingToRepair as exc:
        db.session.rollback()
        raise ApiError(409, "nothing_to_repair", str(exc)) from None
    except (RepairRefused, SourceConfigError) as exc:
        db.session.rollback()
        raise ApiError(422, "repair_refused", str(exc), {"source": [exc.message]}) from None


def _docs(schema: type, summary: str, required: bool = True) -> Callable[[Any], Any]:
    def wrap(view: Any) -> Any:
        view = blp.arguments(schema, location="json", required=required, error_status_code=422)(view)
        view = blp.response(202, CREATED, headers=LOCATION, description=summary)(view)
        view = blp.alt_response(200, schema=CREATED, headers=LOCATION, success=True,
                                description="Another run holds the source (`busy` names it); nothing was queued.")(view)
        return key_required(json_only(blp.errors(401, 409, 415, 422, 503)(blp.protected()(view))))

    return wrap


@blp.route("/backfill", methods=["POST"])
@_docs(BackfillRequest, "A backfill run was queued.")
def backfill(body: dict[str, Any]) -> Answer:
    """Load a past window from a CSV or CoinGecko source without moving its checkpoint (trigger backfill)."""
    return _repair(lambda: enqueue_backfill(body["source"], body["start"], body["end"], body.get("coins") or ()))


@blp.route("/reprocess", methods=["POST"])
@_docs(ReprocessRequest, "A reprocess run was queued.")
def reprocess(body: dict[str, Any]) -> Answer:
    """Transform and load a source's stored raw records again, without reading the source (trigger reprocess)."""
    return _repair(lambda: enqueue_reprocess(body["source"], body.get("run_id"), body.get("since")))


@blp.route("/replay-rejects", methods=["POST"])
@_docs(ReplayRequest, "A replay run was queued.", required=False)
def replay_rejects(body: dict[str, Any]) -> Answer:
    """Retry rejected records after a fix; each reject records when, by which run and with what outcome."""
    return _repair(lambda: enqueue_replay(body.get("source"), body.get("run_id"), body.get("since")))
