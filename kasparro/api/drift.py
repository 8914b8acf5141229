"""Serve schema drift events: GET /drift."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from kasparro.api.auth import read_access
from kasparro.api.base import Blueprint, newest_first
from kasparro.api.params import DriftParams
from kasparro.api.schemas import DriftEventSchema, envelope
from kasparro.models import DriftEvent

blp = Blueprint("drift", __name__, description="Schema drift: fields added, missing, renamed or retyped by sources.")


@blp.route("/drift")
@read_access
@blp.arguments(DriftParams, location="query")
@blp.response(200, envelope(DriftEventSchema, "DriftPage", many=True))
@blp.errors(400, 401)
def list_drift(params: dict[str, Any]) -> dict[str, Any]:
    """List drift events, newest first, optionally for one source and since an instant."""
    filters = {"source": params.get("source"), "since": params.get("since")}
    query = select(DriftEvent)
    if filters["source"]:
        query = query.where(DriftEvent.source == filters["source"])
    if filters["since"]:
        query = query.where(DriftEvent.created_at >= filters["since"])
    return newest_first("drift", query, DriftEvent.id, filters, params, scalars=True)
