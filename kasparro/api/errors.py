"""Turn every failure into one JSON error shape: {"error": {code, message, fields}, "meta": {...}}."""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from kasparro.api.envelope import meta, request_id

logger = logging.getLogger(__name__)

# Codes clients can switch on; anything else falls back to the HTTP reason in snake_case.
CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    500: "internal_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An error the API reports on purpose, with its status, code and per-field messages."""

    def __init__(self, status: int, code: str, message: str, fields: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = dict(fields or {})
        self.headers = dict(headers or {})


def error_response(status: int, code: str, message: str, fields: Mapping[str, Any] | None = None,
                   headers: Mapping[str, str] | None = None) -> Response:
    """Build the JSON error response every failure goes through."""
    body: dict[str, Any] = {"error": {"code": code, "message": message}, "meta": meta()}
    if fields:
        body["error"]["fields"] = dict(fields)
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _code_for(exc: HTTPException) -> str:
    status = exc.code or 500
    return CODES.get(status) or re.sub(r"\W+", "_", (exc.name or "error").lower()).strip("_")


def _flatten(messages: Any) -> dict[str, Any]:
    # webargs nests messages under the location ({"query": {"limit": [...]}}); clients want the field.
    if isinstance(messages, Mapping) and len(messages) == 1:
        (location, inner), = messages.items()
        if location in ("query", "json", "headers", "view_args", "path") and isinstance(inner, Mapping):
            return dict(inner)
    return dict(messages) if isinstance(messages, Mapping) else {"_schema": messages}


def _describe(fields: Mapping[str, Any]) -> str:
    parts = []
    for name, problem in fields.items():
        text = problem[0] if isinstance(problem, list) and problem else problem
        if isinstance(text, Mapping):
            text = "invalid value"
        parts.append(f"{name}: {text}")
    return "; ".join(parts)


def handle_http_exception(exc: HTTPException) -> Response:
    """Render a werkzeug HTTP error (including webargs validation aborts) as JSON."""
    status = exc.code or 500
    data = getattr(exc, "data", None) or {}
    headers = dict(data.get("headers") or {})
    allowed = getattr(exc, "valid_methods", None)
    if status == 405 and allowed:
        headers["Allow"] = ", ".join(allowed)
    messages = data.get("messages") or data.get("errors")
    if messages:
        fields = _flatten(messages)
        if "json" in messages and not isinstance(messages.get("json"), Mapping):
            return error_response(status, "bad_request", "the request body is not valid JSON", headers=headers)
        return error_response(status, "validation_error", _describe(fields), fields, headers)
    message = data.get("message") or exc.description or exc.name
    return error_response(status, _code_for(exc), message, headers=headers)


def handle_api_error(exc: ApiError) -> Response:
    """Render an error the API raised on purpose."""
    return error_response(exc.status, exc.code, exc.message, exc.fields, exc.headers)


def handle_unexpected(exc: Exception) -> Response:
    """Log an unexpected exception with its traceback and answer 500 without leaking it."""
    if isinstance(exc, HTTPException):
        return handle_http_exception(exc)
    logger.exception("unhandled error serving %s %s (request_id=%s)", request.method, request.path, request_id())
    return error_response(500, "internal_error", "an unexpected error occurred; quote the request_id when reporting")


def init_app(app: Flask) -> None:
    """Register the JSON error handlers."""
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(Exception, handle_unexpected)
