"""Report whether the service can serve and whether the ETL can run: GET /health and /health/live.

Severity of each failing check:
- down (503): database. Without it nothing can be served.
- degraded (200, status "degraded"): broker, workers, beat, last_run. Reads still work; runs cannot be
  queued (broker), will not be executed (no worker), will not be scheduled (stale beat), or the last one failed.

/health is public, so a failing check answers a fixed reason per check; what the driver said (host, user,
port) goes to the log only, redacted. The worker ping is a broadcast every worker answers, so its result is
kept for HEALTH_WORKER_CACHE_SECONDS per API process: polling /health never sends more than one per period.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from flask import current_app
from sqlalchemy import select, text

from kasparro.api.base import Blueprint
from kasparro.api.envelope import single
from kasparro.api.params import NoParams
from kasparro.api.schemas import HealthSchema, LiveSchema, envelope
from kasparro.config import HEARTBEAT_KEY
from kasparro.db import db
from kasparro.models import Run
from kasparro.redact import redact_text

blp = Blueprint("health", __name__, description="Liveness and dependency checks (never need the API key).")

HEALTH = envelope(HealthSchema, "HealthResponse")
DOWN = "down"
DEGRADED = "degraded"
logger = logging.getLogger(__name__)
# What a client is told when a check raised something other than CheckFailed (whose words are ours).
REASONS = {"database": "the database did not answer", "broker": "the broker did not answer",
           "workers": "the workers could not be asked", "beat": "the beat heartbeat could not be read",
           "last_run": "the last run could not be read"}
_PINGS = "kasparro_health_pings"
_PING_LOCK = threading.Lock()


class CheckFailed(Exception):
    """A dependency check found a problem; the message says what."""


def _redis(url: str) -> redis.Redis:
    timeout = current_app.config["HEALTH_TIMEOUT_SECONDS"]
    return redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)


def check_database() -> dict[str, Any]:
    """Run SELECT 1."""
    db.session.execute(text("SELECT 1"))
    return {}


def check_broker() -> dict[str, Any]:
    """Ping the broker's Redis."""
    _redis(current_app.config["BROKER_URL"]).ping()
    return {}


def check_workers() -> dict[str, Any]:
    """Ask the workers to answer a ping, at most once per HEALTH_WORKER_CACHE_SECONDS; one answer is enough."""
    kept = current_app.config["HEALTH_WORKER_CACHE_SECONDS"]
    with _PING_LOCK:  # concurrent requests of one process share one ping rather than each sending their own
        asked, outcome = current_app.extensions.get(_PINGS, (float("-inf"), None))
        if outcome is None or time.monotonic() - asked >= kept:
            try:
                outcome = _ping_workers()
            except Exception as exc:  # noqa: BLE001 - kept like an answer, so a dead broker is not asked each time
                outcome = exc
            current_app.extensions[_PINGS] = (time.monotonic(), outcome)
    if isinstance(outcome, Exception):
        raise outcome.with_traceback(None)  # the kept exception, without the tracebacks of earlier raises
    return dict(outcome)


def _ping_workers() -> dict[str, Any]:
    celery = current_app.extensions["celery"]
    replies = celery.control.ping(timeout=current_app.config["HEALTH_WORKER_TIMEOUT_SECONDS"], limit=1)
    if not replies:
        raise CheckFailed("no worker answered a ping")
    return {"workers": sorted(name for reply in replies for name in reply)}


def check_beat() -> dict[str, Any]:
    """Read when the beat scheduler last ticked."""
    value = _redis(current_app.config["REDIS_URL"]).get(current_app.config.get("HEALTH_BEAT_KEY", HEARTBEAT_KEY))
    if value is None:
        raise CheckFailed("the beat scheduler has never reported")
    age = round(time.time() - float(value), 1)
    details = {"last_seen_unix": float(value), "age_seconds": age}
    if age > current_app.config["HEALTH_BEAT_STALE_SECONDS"]:
        raise CheckFailed(f"the beat scheduler was last seen {age:.0f}s ago", details)
    return details


def check_last_run() -> dict[str, Any]:
    """Report the latest run; failing if it failed."""
    run = db.session.execute(select(Run).order_by(Run.id.desc()).limit(1)).scalar_one_or_none()
    if run is None:
        return {"run_id": None, "status": None}
    details = {"run_id": run.id, "status": run.status,
               "finished_at": run.finished_at.isoformat() if run.finished_at else None}
    if run.status == "failed":
        raise CheckFailed(f"run {run.id} failed", details)
    return details


def _run(name: str, check: Callable[[], dict[str, Any]], severity: str) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {"ok": True, "severity": severity, "error": None, "details": {}}
    try:
        result["details"] = check()
    except CheckFailed as exc:
        result.update(ok=False, error=str(exc.args[0]))
        if len(exc.args) > 1:
            result["details"] = exc.args[1]
    except Exception as exc:  # noqa: BLE001 - a health check reports every failure instead of raising it
        result.update(ok=False, error=REASONS[name])
        logger.warning("health check %s failed: %s: %s", name, type(exc).__name__, redact_text(str(exc))[:2000])
        if check in (check_database, check_last_run):
            db.session.rollback()
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
    return result


def _skipped(severity: str, reason: str) -> dict[str, Any]:
    return {"ok": False, "severity": severity, "error": reason, "latency_ms": 0.0, "details": {}}


def run_checks() -> dict[str, dict[str, Any]]:
    """Run every check, skipping those whose dependency is already known to be down."""
    checks = {"database": _run("database", check_database, DOWN), "broker": _run("broker", check_broker, DEGRADED)}
    checks["workers"] = _run("workers", check_workers, DEGRADED) if checks["broker"]["ok"] \
        else _skipped(DEGRADED, "skipped: broker unreachable")
    checks["beat"] = _run("beat", check_beat, DEGRADED)
    checks["last_run"] = _run("last_run", check_last_run, DEGRADED) if checks["database"]["ok"] \
        else _skipped(DEGRADED, "skipped: database unreachable")
    return checks


def health_report() -> dict[str, Any]:
    """Run every check and fold them into a status: down, degraded or ok, naming the failing checks."""
    checks = run_checks()
    failing = [name for name, check in checks.items() if not check["ok"]]
    down = any(checks[name]["severity"] == DOWN for name in failing)
    return {"status": DOWN if down else DEGRADED if failing else "ok", "failing": failing, "checks": checks}


@blp.route("/health")
@blp.arguments(NoParams, location="query")
@blp.response(200, HEALTH, description="Serving: status ok, or degraded with the failing checks named.")
@blp.alt_response(503, schema=HEALTH, description="Down: a check of severity 'down' (the database) failed.")
@blp.errors(400)
@blp.public()
def health(_: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Check the database, broker, workers, beat and last run; 503 only when serving is impossible."""
    report = health_report()
    return single(report), 503 if report["status"] == DOWN else 200


@blp.route("/health/live")
@blp.arguments(NoParams, location="query")
@blp.response(200, envelope(LiveSchema, "LiveResponse"))
@blp.errors(400)
@blp.public()
def live(_: dict[str, Any]) -> dict[str, Any]:
    """Answer as long as the process serves requests; touches no dependency."""
    return single({"status": "alive"})
