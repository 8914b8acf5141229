"""Query-string and body schemas: strict, so unknown or malformed parameters answer 400 naming the field."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from kasparro.api import cursor
from kasparro.models import QUALITY_RULES, RUN_STATUSES, TRIGGERS

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
NUL_FREE = "^[^\\x00]*$"


def _no_nul(value: str) -> None:
    # Postgres text cannot hold NUL; refuse it here rather than fail in the driver.
    if "\x00" in value:
        raise ValidationError("must not contain NUL characters")


def text(description: str, max_length: int = 200, **kwargs: Any) -> fields.String:
    """Return a bounded, NUL-free string parameter."""
    # The pattern tells clients (and generated tests) what _no_nul enforces.
    return fields.String(validate=[validate.Length(min=1, max=max_length), _no_nul],
                         metadata={"description": description, "pattern": NUL_FREE}, **kwargs)


def limit_field(default: int = DEFAULT_LIMIT) -> fields.Integer:
    """Return the page size parameter, 1..1000."""
    return fields.Integer(load_default=default, validate=validate.Range(min=1, max=MAX_LIMIT),
                          metadata={"description": f"Page size, 1 to {MAX_LIMIT}."})


def cursor_field() -> fields.String:
    """Return the opaque cursor parameter, with the alphabet and length every issued cursor has."""
    return fields.String(validate=[validate.Length(min=cursor.MIN_LENGTH, max=cursor.MAX_LENGTH),
                                   validate.Regexp(cursor.PATTERN, error="is not a valid cursor")],
                         metadata={"description": "next_cursor from the previous page; only valid with the same "
                                                  "filters and sort."})


class Instant(fields.AwareDateTime):
    """An ISO-8601 timestamp, read as UTC when it has no offset, and handed on in UTC."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        parsed = super()._deserialize(value, attr, data, **kwargs)
        try:
            # Postgres refuses offsets beyond ±15:59 that Python accepts; UTC is always fine.
            return parsed.astimezone(timezone.utc)
        except OverflowError:
            raise ValidationError("is out of range") from None


def instant(description: str) -> Instant:
    """Return an ISO-8601 timestamp parameter."""
    return Instant(default_timezone=timezone.utc, metadata={"description": description})


class StrictSchema(Schema):
    """A schema that refuses fields it does not know."""

    class Meta:
        unknown = RAISE


class NoParams(StrictSchema):
    """An endpoint that takes no query parameters."""


class QuoteParams(StrictSchema):
    asset = text("Canonical asset slug, e.g. bitcoin.")
    symbol = text("Ticker symbol, case-insensitive, e.g. BTC.", 40)
    source = text("Source name, e.g. coingecko.", 100)
    since = instant("Only quotes observed at or after this instant (ISO-8601).")
    until = instant("Only quotes observed before this instant (ISO-8601); must be later than since.")
    sort = fields.String(load_default="-observed_at", validate=validate.OneOf(["observed_at", "-observed_at"]),
                         metadata={"description": "observed_at (oldest first) or -observed_at (newest first)."})
    limit = limit_field()
    cursor = cursor_field()

    @validates_schema
    def _window(self, data: dict[str, Any], **_: Any) -> None:
        _check_window(data)


class NewsParams(StrictSchema):
    asset = text("Canonical asset slug: only items linked to it, e.g. bitcoin.")
    feed = text("Feed label, as declared on the source (`feed`), e.g. coindesk.")
    since = instant("Only items published at or after this instant (ISO-8601).")
    until = instant("Only items published before this instant (ISO-8601); must be later than since.")
    limit = limit_field()
    cursor = cursor_field()

    @validates_schema
    def _window(self, data: dict[str, Any], **_: Any) -> None:
        _check_window(data)


def _check_window(data: dict[str, Any]) -> None:
    if data.get("since") and data.get("until") and data["since"] >= data["until"]:
        raise ValidationError("must be later than since", field_name="until")


class LatestParams(StrictSchema):
    source = text("Only this source's latest quote per asset.", 100)
    limit = limit_field()
    cursor = cursor_field()


class AssetParams(StrictSchema):
    symbol = text("Ticker symbol, case-insensitive exact match, e.g. BTC.", 40)
    q = text("Case-insensitive substring of the asset's name or slug, e.g. bit.", 100)
    limit = limit_field()
    cursor = cursor_field()


class RunParams(StrictSchema):
    status = fields.String(validate=validate.OneOf(RUN_STATUSES))
    trigger = fields.String(validate=validate.OneOf(TRIGGERS))
    limit = limit_field(20)
    cursor = cursor_field()


class CompareParams(StrictSchema):
    a = fields.Integer(required=True, validate=validate.Range(min=1, max=2**63 - 1),
                       metadata={"description": "The earlier (baseline) run id."})
    b = fields.Integer(required=True, validate=validate.Range(min=1, max=2**63 - 1),
                       metadata={"description": "The run to compare with it."})


class RejectParams(StrictSchema):
    run_id = fields.Integer(validate=validate.Range(min=1, max=2**63 - 1))
    source = text("Source name.", 100)
    limit = limit_field()
    cursor = cursor_field()


class AnomalyParams(StrictSchema):
    source = text("Source name.", 100)
    rule = fields.String(validate=validate.OneOf(QUALITY_RULES), metadata={"description": "The rule that fired."})
    run_id = fields.Integer(validate=validate.Range(min=1, max=2**63 - 1))
    since = instant("Only findings recorded at or after this instant (ISO-8601).")
    limit = limit_field()
    cursor = cursor_field()


class DriftParams(StrictSchema):
    source = text("Source name.", 100)
    since = instant("Only drift events recorded at or after this instant (ISO-8601).")
    limit = limit_field()
    cursor = cursor_field()


class RunRequest(StrictSchema):
    sources = fields.List(text("A declared source name.", 100), validate=validate.Length(min=1, max=50),
                          metadata={"description": "Sources to run; all enabled sources when omitted."})


def _run_id(description: str) -> fields.Integer:
    return fields.Integer(validate=validate.Range(min=1, max=2**63 - 1), metadata={"description": description})


class BackfillRequest(StrictSchema):
    source = text("A declared source that can backfill (CSV or CoinGecko).", 100, required=True)
    start = Instant(required=True, default_timezone=timezone.utc,
                    metadata={"description": "Start of the window, included (ISO-8601)."})
    end = Instant(required=True, default_timezone=timezone.utc,
                  metadata={"description": "End of the window, included (ISO-8601)."})
    coins = fields.List(fields.String(validate=[validate.Length(min=1, max=100),
                                                validate.Regexp(r"^[^\x00-\x1f]+$", error="must be printable text")],
                                      metadata={"description": "An asset id of the source."}),
                        validate=validate.Length(min=1, max=100),
                        metadata={"description": "Only these assets; the source's whole listing when omitted."})

    @validates_schema
    def _ordered(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("start") and data.get("end") and data["start"] > data["end"]:
            raise ValidationError("must not be before start", field_name="end")


class ReprocessRequest(StrictSchema):
    source = text("The source whose stored raw records to transform and load again.", 100, required=True)
    run_id = _run_id("Only the records this run received.")
    since = instant("Only the records received at or after this instant (ISO-8601).")


class ReplayRequest(StrictSchema):
    source = text("Only this source's rejects; every source with some when omitted.", 100)
    run_id = _run_id("Only the records this run rejected.")
    since = instant("Only the records rejected at or after this instant (ISO-8601).")


class RunHeaders(Schema):
    # Headers are many and mostly unrelated, so unknown ones pass (webargs excludes them).
    idempotency_key = fields.String(data_key="Idempotency-Key", validate=[validate.Length(min=1, max=200), _no_nul],
                                    metadata={"description": "A retried POST with the same key returns the "
                                                             "same run instead of starting another."})
