"""List every declared source with its settings, last run, checkpoint and next scheduled run: GET /sources."""
from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import redis
from flask import current_app
from sqlalchemy import select

from kasparro import catalog, redis_store
from kasparro.api.auth import read_access
from kasparro.api.base import Blueprint
from kasparro.api.envelope import listing
from kasparro.api.params import NoParams
from kasparro.api.schemas import SourceSchema, envelope
from kasparro.api.stats import source_stats
from kasparro.config import ETL_SCHEDULE_ENTRY, NEXT_RUN_KEY
from kasparro.db import db
from kasparro.models import Checkpoint

blp = Blueprint("sources", __name__, description="The declared sources: settings, last run, checkpoint, schedule.")

# A source's cursor may carry this line saying where it stands (kasparro.sources.base.CURSOR_SUMMARY);
# the API reads it without knowing the cursor's shape.
CURSOR_SUMMARY = "summary"


def _checkpoints() -> dict[str, dict[str, Any]]:
    rows = db.session.execute(select(Checkpoint)).scalars()
    return {row.source: {"summary": (row.cursor or {}).get(CURSOR_SUMMARY), "run_id": row.run_id,
                         "batch_id": row.batch_id, "updated_at": row.updated_at} for row in rows}


def next_scheduled_run() -> datetime | None:
    """Return when beat will next start a run, as beat last published it; None if beat never did or is unreachable."""
    key = current_app.config.get("BEAT_NEXT_RUN_KEY", NEXT_RUN_KEY)
    try:
        value = redis_store.client().hget(key, ETL_SCHEDULE_ENTRY)
    except redis.RedisError:
        return None
    if value is None:
        return None
    # A due time in the past means beat is about to send it (or is not running: /health says which).
    return datetime.fromtimestamp(max(float(value), time.time()), tz=timezone.utc)


def _last_run(stats: dict[str, Any] | None) -> dict[str, Any] | None:
    if not stats or stats.get("last_run_id") is None:
        return None
    return {"run_id": stats["last_run_id"], "status": stats["last_run_status"], "counts": stats["last_run"],
            "last_success_at": stats["last_success_at"], "last_failure_at": stats["last_failure_at"],
            "last_error": stats["last_error"]}


def source_overview(stats: Mapping[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Return every declared source with its settings, last run, checkpoint, totals and next scheduled run.

    `stats` is `source_stats()` by source, when the caller has already read it.
    """
    stats = stats if stats is not None else {row["source"]: row for row in source_stats()}
    checkpoints = _checkpoints()
    next_run = next_scheduled_run()
    interval = current_app.config["ETL_INTERVAL_SECONDS"]
    return [{**entry, "last_run": _last_run(stats.get(entry["name"])),
             "checkpoint": checkpoints.get(entry["name"]),
             "rows_total": stats.get(entry["name"], {}).get("rows_total", 0),
             "rejected_total": stats.get(entry["name"], {}).get("rejected_total", 0),
             "schedule_seconds": interval if entry["enabled"] else None,
             "next_run_at": next_run if entry["enabled"] else None}
            for entry in catalog.source_listing(current_app.config)]


@blp.route("/sources")
@read_access
@blp.arguments(NoParams, location="query")
@blp.response(200, envelope(SourceSchema, "SourceList", many=True))
@blp.errors(400, 401)
def list_sources(_: dict[str, Any]) -> dict[str, Any]:
    """List every declared source, enabled or not, with its last run, checkpoint and next scheduled run."""
    rows = source_overview()
    return listing(rows, {}, len(rows), None)
