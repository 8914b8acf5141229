"""Serve records that failed validation, with their reasons, raw payload and last replay: GET /rejects."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from kasparro.api.auth import read_access
from kasparro.api.base import Blueprint, newest_first
from kasparro.api.params import RejectParams
from kasparro.api.schemas import RejectSchema, envelope
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
    )
    if filters["run_id"] is not None:
        query = query.where(RejectedRecord.run_id == filters["run_id"])
    if filters["source"]:
        query = query.where(RejectedRecord.source == filters["source"])
    return newest_first("rejects", query, RejectedRecord.id, filters, params)
