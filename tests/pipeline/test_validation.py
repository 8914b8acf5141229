"""Validation of unified quote fields: the reasons a row is rejected, and the fast path agreeing with the schema."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from kasparro.pipeline.validation import load_quote, quote_schema

GOOD = {"source_asset_id": "bitcoin", "observed_at": "2019-04-24", "price_usd": "5296.23",
        "market_cap_usd": "93510546402", "volume_24h_usd": None, "percent_change_24h": "-1.5"}


def test_a_plain_row_is_typed_and_normalised() -> None:
    quote = load_quote({**GOOD, "symbol": "btc", "observed_at": "2019-04-24T10:00:00+02:00"})

    assert quote["observed_at"] == datetime(2019, 4, 24, 8, 0, tzinfo=timezone.utc)
    assert (quote["price_usd"], quote["symbol"], quote["volume_24h_usd"]) == (Decimal("5296.23"), "BTC", None)


@pytest.mark.parametrize(("change", "reason"), [
    ({"price_usd": None}, {"price_usd": ["Field may not be null."]}),
    ({"price_usd": "n/a"}, {"price_usd": ["Not a valid number."]}),
    ({"price_usd": "NaN"}, {"price_usd": ["Special numeric values (nan or infinity) are not permitted."]}),
    ({"price_usd": "-1"}, {"price_usd": ["Must be greater than or equal to 0 and less than or equal to "
                                         "1000000000000."]}),
    ({"market_cap_usd": "1e30"}, {"market_cap_usd": ["Must be greater than or equal to 0 and less than or "
                                                     "equal to 10000000000000000."]}),
    ({"observed_at": "2019-13-45"}, {"observed_at": ["Not a valid datetime."]}),
    ({"observed_at": "2001-01-01"}, {"observed_at": ["observation time is outside the plausible range"]}),
    ({"source_asset_id": ""}, {"source_asset_id": ["Length must be between 1 and 200."]}),
])
def test_a_bad_value_is_rejected_with_the_field_named(change: dict[str, Any], reason: dict[str, list[str]]) -> None:
    with pytest.raises(ValidationError) as error:
        load_quote({**GOOD, **change})

    assert error.value.messages == reason


def _outcome(loader: Any, fields: dict[str, Any]) -> Any:
    try:
        return loader(fields)
    except ValidationError as exc:
        return ("rejected", exc.messages)


numbers = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                    st.floats(allow_nan=True, allow_infinity=True), st.decimals(allow_nan=True),
                    st.sampled_from(["", " 1.5 ", "1e5", "-0", "1,000", "0x10", "١٢", "inf", "1_000", "nan"]),
                    st.text(max_size=8))
times = st.one_of(st.none(), st.integers(), st.datetimes(timezones=st.sampled_from([None, timezone.utc])),
                  st.sampled_from(["2019-04-24", "2019-04-24T10:00:00Z", "20190424", "2019-W17", "2099-01-01",
                                   "2019-04-24 10:00", "yesterday", "2008-12-31T23:59:59Z", ""]),
                  st.text(max_size=12))
texts = st.one_of(st.none(), st.integers(), st.text(max_size=45), st.binary(max_size=3))


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(st.fixed_dictionaries({"source_asset_id": texts, "symbol": texts, "name": texts, "observed_at": times,
                              "price_usd": numbers, "market_cap_usd": numbers, "volume_24h_usd": numbers,
                              "percent_change_24h": numbers}))
def test_the_fast_path_decides_exactly_as_the_schema_would(fields: dict[str, Any]) -> None:
    assert _outcome(load_quote, fields) == _outcome(quote_schema.load, fields)
