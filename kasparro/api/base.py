"""A flask-smorest Blueprint whose argument errors are 400s and whose query strings are strict."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flask_smorest
from marshmallow import RAISE, ValidationError
from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute
from webargs.flaskparser import FlaskParser

from kasparro.api import cursor
from kasparro.api.auth import SECURITY_SCHEME
from kasparro.api.envelope import listing
from kasparro.api.errors import ApiError
from kasparro.db import db

# Error responses by status, as registered on the Api (components/responses).
ERROR_RESPONSES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 404: "NOT_FOUND", 415: "UNSUPPORTED_MEDIA_TYPE",
                   409: "CONFLICT", 422: "UNPROCESSABLE_ENTITY",
                   503: "SERVICE_UNAVAILABLE"}


class StrictParser(FlaskParser):
    """Answer 400 on invalid input, and refuse unknown query parameters instead of ignoring them."""

    DEFAULT_VALIDATION_STATUS = 400
    DEFAULT_UNKNOWN_BY_LOCATION = {**FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION, "query": RAISE, "querystring": RAISE}


class Blueprint(flask_smorest.Blueprint):
    """The project's blueprint: strict arguments, JSON errors documented per view."""

    ARGUMENTS_PARSER = StrictParser()

    def errors(self, *statuses: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Document the error responses a view can give."""

        def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
            for status in statuses:
                view = self.alt_response(status, response=ERROR_RESPONSES[status])(view)
            return view

        return decorator

    def protected(self) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Document that a view always needs the API key."""
        return self.doc(security=[{SECURITY_SCHEME: []}])

    def public(self) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Document that a view never needs the API key."""
        return self.doc(security=[])


def cursor_key(token: str | None, tag: str, types: tuple[type, ...]) -> tuple[Any, ...] | None:
    """Decode the request's cursor, answering 400 naming the field when it is bad or foreign."""
    if token is None:
        return None
    try:
        return cursor.decode(token, tag, types)
    except ValidationError as exc:
        raise ApiError(400, "validation_error", f"cursor: {exc.messages[0]}", {"cursor": exc.messages}) from None


def keyset_page(scope: str, filters: dict[str, Any], params: dict[str, Any], types: tuple[type, ...],
                fetch: Callable[[tuple[Any, ...] | None], Sequence[Any]], key: Callable[[Any], tuple[Any, ...]],
                convert: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """Serve one keyset page: decode the cursor, fetch limit+1 rows after it, and wrap the page with the next cursor.

    `fetch(after)` returns up to limit+1 rows past the sort key `after` (None on the first page); `key(row)`
    is a row's sort key, which the next cursor carries.
    """
    tag = cursor.fingerprint(scope, filters)
    after = cursor_key(params.get("cursor"), tag, types)
    rows, next_cursor = cursor.page(fetch(after), params["limit"], key, tag)
    return listing([convert(row) for row in rows] if convert else rows, filters, params["limit"], next_cursor)


def newest_first(scope: str, query: Select[Any], id_column: InstrumentedAttribute[int], filters: dict[str, Any],
                 params: dict[str, Any], scalars: bool = False,
                 convert: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """Serve a filtered list newest first by id, keyset paged on the id (runs, drift, anomalies, rejects).

    `scalars` when `query` selects one entity (rows are then its objects); `convert` shapes each row.
    """
    query = query.order_by(id_column.desc()).limit(params["limit"] + 1)

    def fetch(after: tuple[Any, ...] | None) -> Sequence[Any]:
        result = db.session.execute(query if after is None else query.where(id_column < after[0]))
        return result.scalars().all() if scalars else result.all()

    return keyset_page(scope, filters, params, (int,), fetch, lambda row: (row.id,), convert=convert)
