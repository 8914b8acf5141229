"""Stamp every request with an id and a start time, and wrap payloads as {"data": ..., "meta": ...}."""
from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flask import Flask, Response, g, has_request_context, request

REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is echoed only when it is short and plain, so it cannot inject into logs or headers.
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def _start_request() -> None:
    g.started = time.perf_counter()
    offered = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = offered if _SANE_REQUEST_ID.match(offered) else uuid.uuid4().hex


def _finish_request(response: Response) -> Response:
    if hasattr(g, "request_id"):
        response.headers[REQUEST_ID_HEADER] = g.request_id
    return response


def request_id() -> str:
    """Return the current request's id, creating one when the hooks did not run."""
    if not has_request_context():
        return uuid.uuid4().hex
    if not hasattr(g, "request_id"):
        _start_request()
    return g.request_id


def meta(**extra: Any) -> dict[str, Any]:
    """Return the meta block: request id, latency so far, and any extra keys."""
    started = g.get("started") if has_request_context() else None
    latency = (time.perf_counter() - started) * 1000 if started is not None else 0.0
    return {"request_id": request_id(), "api_latency_ms": round(latency, 3), **extra}


def single(data: Any) -> dict[str, Any]:
    """Wrap one object."""
    return {"data": data, "meta": meta()}


def listing(rows: list[Any], filters: Mapping[str, Any], limit: int, next_cursor: str | None) -> dict[str, Any]:
    """Wrap one page of a list with the filters applied and the paging state."""
    applied = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in filters.items() if v is not None}
    return {"data": rows, "meta": meta(filters=applied, limit=limit, next_cursor=next_cursor,
                                      has_more=next_cursor is not None)}


def init_app(app: Flask) -> None:
    """Install the request id and timing hooks."""
    app.before_request(_start_request)
    app.after_request(_finish_request)
