"""Serve what the data-quality rules found, with the rule that fired: GET /anomalies."""
from __future__ import annotations

from typing import Any

from kasparro.api.auth import read_access
from kasparro.api.base import Blueprint, newest_first
from kasparro.api.params import AnomalyParams
from kasparro.api.schemas import QualityFindingSchema, envelope
from kasparro.api.summaries import anomaly, anomaly_query
from kasparro.models import Anomaly

blp = Blueprint("anomalies", __name__, description="Data-quality findings of each run, by rule.")


@blp.route("/anomalies")
@read_access
@blp.arguments(AnomalyParams, location="query")
@blp.response(200, envelope(QualityFindingSchema, "AnomalyPage", many=True))
@blp.errors(400, 401)
def list_anomalies(params: dict[str, Any]) -> dict[str, Any]:
    """List quality findings, newest first, optionally by source, rule, run and time."""
    filters = {name: params.get(name) for name in ("source", "rule", "run_id", "since")}
    query = anomaly_query()
    for name in ("source", "rule", "run_id"):
        if filters[name] is not None:
            query = query.where(getattr(Anomaly, name) == filters[name])
    if filters["since"] is not None:
        query = query.where(Anomaly.created_at >= filters["since"])
    return newest_first("anomalies", query, Anomaly.id, filters, params, convert=anomaly)
