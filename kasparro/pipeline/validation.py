"""Validate unified quote fields with marshmallow: types, ranges and dates."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate, validates

# Quotes stamped further ahead than this are clock errors, not observations.
FUTURE_TOLERANCE = timedelta(days=1)
EARLIEST = datetime(2009, 1, 3, tzinfo=timezone.utc)  # the Bitcoin genesis block
# Bounds far above any real market, so absurd numbers are rejected, not stored.
MAX_PRICE = 10**12
MAX_TOTAL = 10**16


class UnifiedQuoteSchema(Schema):
    """A quote in unified fields, as any source maps it."""

    class Meta:
        unknown = EXCLUDE

    source_asset_id = fields.String(required=True, validate=validate.Length(min=1, max=200))
    symbol = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=40))
    name = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    observed_at = fields.AwareDateTime(required=True, default_timezone=timezone.utc)
    price_usd = fields.Decimal(required=True, allow_nan=False, validate=validate.Range(min=0, max=MAX_PRICE))
    market_cap_usd = fields.Decimal(load_default=None, allow_none=True, allow_nan=False,
                                    validate=validate.Range(min=0, max=MAX_TOTAL))
    volume_24h_usd = fields.Decimal(load_default=None, allow_none=True, allow_nan=False,
                                    validate=validate.Range(min=0, max=MAX_TOTAL))
    percent_change_24h = fields.Decimal(load_default=None, allow_none=True, allow_nan=False,
                                        validate=validate.Range(min=-100, max=1_000_000))

    @validates("observed_at")
    def _plausible_time(self, value: datetime, **_: Any) -> None:
        if value < EARLIEST or value > datetime.now(timezone.utc) + FUTURE_TOLERANCE:
            raise ValidationError("observation time is outside the plausible range")

    @post_load
    def _normalise(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data["observed_at"] = data["observed_at"].astimezone(timezone.utc)
        if data.get("symbol"):
            data["symbol"] = data["symbol"].upper()
        return data


quote_schema = UnifiedQuoteSchema()
