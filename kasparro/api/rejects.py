"""Serve records that failed validation, with their reasons, raw payload and last replay: GET /rejects, /rejects/<id>.

A list shows each payload whole only up to API_PAYLOAD_PREVIEW_CHARS characters of its JSON (default 1024);
a longer one comes as that many characters of preview with its length and hash, and whole from
/rejects/<id>. A page of 1,000 rejects of a megabyte each was a gigabyte answered to one request.
"""
from __future__ import annotations

from typing import Any

from flask import current_app
from sqlalchemy import Select, Text, case, cast, func, select

from kasparro.api.auth import read_access
from kasparro.api.base import Blueprint, newest_first
from kasparro.api.envelope import single
from kasparro.api.errors import ApiError
from kasparro.api.params import NoParams, RejectParams
from kasparro.api.schemas import RejectSchema, envelope
from kasparro.api.summaries import MAX_ID
from kasparro.db import db
from kasparro.models import RawRecord, RejectedRecord

blp = Blueprint("rejects", __name__, description="Records refused by validation, with reasons and lineage.")


def rejects_query(preview: int | None) -> Select[Any]:
    """Select rejects with their raw record; payloads longer than `preview` characters as a preview (None: whole)."""
    as_text = cast(RawRecord.payload, Text)
    chars = func.length(as_text)
    if preview is None:
        shown = [RawRecord.payload, chars.label("payload_chars"), (chars < 0).label("payload_truncated"),
                 cast(None, Text).label("payload_preview")]
    else:
        shown = [case((chars <= preview, RawRecord.payload)).label("payload"), chars.label("payload_chars"),
                 (chars > preview).label("payload_truncated"),
                 case((chars > preview, func.left(as_text, preview))).label("payload_preview")]
    return (
        select(RejectedRecord.id, RejectedRecord.run_id, RejectedRecord.source, RejectedRecord.reason,
               RejectedRecord.raw_record_id, RejectedRecord.created_at, RawRecord.position, *shown,
               RawRecord.content_hash.label("payload_hash"), RejectedRecord.replayed_at,
               RejectedRecord.replay_run_id, RejectedRecord.replay_outcome)
        .join(RawRecord, RawRecord.id == RejectedRecord.raw_record_id)
    )


@blp.route("/rejects")
@read_access
@blp.arguments(RejectParams, location="query")
@blp.response(200, envelope(RejectSchema, "RejectPage", many=True))
@blp.errors(400, 401)
def list_rejects(params: dict[str, Any]) -> dict[str, Any]:
    """List rejected records, newest first, optionally for one run and source; long payloads as a preview."""
    filters = {"run_id": params.get("run_id"), "source": params.get("source")}
    query = rejects_query(current_app.config["API_PAYLOAD_PREVIEW_CHARS"])
    if filters["run_id"] is not None:
        query = query.where(RejectedRecord.run_id == filters["run_id"])
    if filters["source"]:
        query = query.where(RejectedRecord.source == filters["source"])
    return newest_first("rejects", query, RejectedRecord.id, filters, params)


@blp.route("/rejects/<int:reject_id>")
@read_access
@blp.arguments(NoParams, location="query")
@blp.response(200, envelope(RejectSchema, "RejectResponse"))
@blp.errors(400, 401, 404)
def get_reject(_: dict[str, Any], reject_id: int) -> dict[str, Any]:
    """Show one rejected record with its whole payload."""
    row = db.session.execute(rejects_query(None).where(RejectedRecord.id == reject_id)).one_or_none() \
        if 0 < reject_id <= MAX_ID else None
    if row is None:
        raise ApiError(404, "not_found", f"no reject with id {reject_id}")
    return single(row)
