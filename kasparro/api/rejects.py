"""Serve records that failed validation, with their reasons, raw payload and last replay: GET /rejects."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from kasparro.api.auth import read_access
from kasparro.api.base import Blueprint, keyset_page
from kasparro.api.params import RejectParams
from kasparro.api.schemas import RejectSchema, envelope
from kasparro.db import db
from kasparro.models import RawRecord, RejectedRecord

blp = Blueprint("rejects", __name__, description="Records refused by validation, with reasons and lineage.")


@blp.route("/rejects")
@read_access
@blp.arguments(RejectParams, location="query")
@blp.response(200, envelope(RejectSchema, "RejectPage", many=True))
@blp.errors(400, 401)
def list_rejects(params: dict[str, Any]) -> dict[str, Any]:
    """List rejected records, newest first, optionally for one run and source."""
    filters = {"run_id": params.get("run_id"), "source": params.get("source")}
    query = (
        select(RejectedRecord.id, RejectedRecord.run_id, RejectedRecord.source, RejectedRecord.reason,
               RejectedRecord.raw_record_id, RejectedRecord.created_at, RawRecord.position, RawRecord.payload,
               RejectedRecord.replayed_at, RejectedRecord.replay_run_id, RejectedRecord.replay_outcome)
        .join(RawRecord, RawRecord.id == RejectedRecord.raw_record_id)
        .order_by(RejectedRecord.id.desc())
        .limit(params["limit"] + 1)
    )
    if filters["run_id"] is not None:
        query = query.where(RejectedRecord.run_id == filters["run_id"])
    if filters["source"]:
        query = query.where(RejectedRecord.source == filters["source"])

    def fetch(after: tuple[Any, ...] | None) -> Sequence[Any]:
        page = query if after is None else query.where(RejectedRecord.id < after[0])
        return db.session.execute(page).all()

    return keyset_page("rejects", filters, params, (int,), fetch, lambda r: (r.id,))
