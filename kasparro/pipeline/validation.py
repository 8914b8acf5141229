"""Validate unified quote fields with marshmallow: types, ranges and dates."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
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


_DECIMAL_FIELDS = (("price_usd", MAX_PRICE, 0), ("market_cap_usd", MAX_TOTAL, 0),
                   ("volume_24h_usd", MAX_TOTAL, 0), ("percent_change_24h", 1_000_000, -100))
_TEXT_FIELDS = (("symbol", 40), ("name", 200))


def _plain_decimal(value: Any, low: int, high: int) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() and low <= number <= high else None


def _plain_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    if parsed < EARLIEST or parsed > datetime.now(timezone.utc) + FUTURE_TOLERANCE:
        return None
    return parsed.astimezone(timezone.utc)


def load_quote(fields: dict[str, Any]) -> dict[str, Any]:
    """Validate unified fields like `quote_schema.load`, deciding plainly valid rows without marshmallow.

    marshmallow costs ~50 µs a row; most rows are plainly valid, so they are
    checked here by the same rules, and anything doubtful goes to the schema,
    which accepts it or words the reasons. This path never accepts a row the
    schema would reject (tests/pipeline/test_validation.py checks both agree).
    """
    source_id = fields.get("source_asset_id")
    observed = _plain_time(fields.get("observed_at"))
    if not isinstance(source_id, str) or not 1 <= len(source_id) <= 200 or observed is None:
        return quote_schema.load(fields)
    quote: dict[str, Any] = {"source_asset_id": source_id, "observed_at": observed}
    for name, longest in _TEXT_FIELDS:
        text = fields.get(name)
        if text is not None and (not isinstance(text, str) or len(text) > longest):
            return quote_schema.load(fields)
        quote[name] = text.upper() if name == "symbol" and text else text
    for name, high, low in _DECIMAL_FIELDS:
        value = fields.get(name)
        if value is None and name != "price_usd":
            quote[name] = None
            continue
        number = _plain_decimal(value, low, high)
        if number is None:
            return quote_schema.load(fields)
        quote[name] = number
    return quote
