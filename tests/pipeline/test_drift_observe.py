"""The fast snapshot (fields read as columns) says exactly what the record-by-record one said."""
from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from collections.abc import Iterable, Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kasparro.pipeline import drift
from kasparro.sources.base import expect

EXPECTED = {"id": expect("string"), "current_price": expect("number"), "market_cap": expect("number|null"),
            "quotes.USD.price": expect("number")}
NAMES = ["id", "current_price", "currentPrice", "market_cap", "price", "quotes", "_extra", "Close Price"]


def reference_flat(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What the record walk gave for a flat schema: every field but the pipeline's `_` markers."""
    return {key: value for key, value in payload.items() if isinstance(key, str) and not key.startswith("_")}


# The objects EXPECTED's one dotted field ("quotes.USD.price") lies under: the walk descends only into these.
PARENTS = {"quotes", "quotes.USD"}


def reference_nested(payload: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten for EXPECTED record by record, written apart from `drift.flatten`."""
    flat: dict[str, Any] = {}
    for key, value in payload.items():
        if not isinstance(key, str) or key.startswith("_"):
            continue
        if isinstance(value, dict) and prefix + key in PARENTS:
            flat.update(reference_nested(value, prefix + key + "."))
        else:
            flat[prefix + key] = value
    return flat


def json_kind(value: Any) -> str:
    """Name a decoded JSON value's type by what JSON calls it (the oracle's own, not `drift.json_type`)."""
    kinds = {type(None): "null", bool: "boolean", int: "number", float: "number", str: "string", list: "array",
             dict: "object"}
    return kinds[type(value)]


def number_in(value: Any) -> float | None:
    """Read a value as a number the way the snapshot's ranges are meant to: numbers, and text with thousands
    commas; never a boolean. Decimal, not float(), so the oracle parses text by other code than `drift`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    # Text around a number may be whitespace, as float() takes it: Decimal (str.strip) also takes the four
    # information separators U+001C-U+001F for whitespace, float() does not ("0\x1f" is no number).
    if isinstance(value, str) and any("\x1c" <= char <= "\x1f" for char in value):
        return None
    try:
        return float(Decimal(value.replace(",", "")) if isinstance(value, str) else value)
    except InvalidOperation:
        return None


def reference_observe(records: Iterable[Mapping[str, Any]]) -> drift.Snapshot:
    """The observe of before the fast path, kept as the oracle, with its two later rules: a value that is
    not finite ("inf" read from text) bounds no range, and -0.0 is the bound 0.0."""
    snapshot: drift.Snapshot = {}
    for record in records:
        for name, value in record.items():
            stats = snapshot.setdefault(name, {"types": {}, "min": None, "max": None})
            kind = json_kind(value)
            stats["types"][kind] = stats["types"].get(kind, 0) + 1
            number = number_in(value)
            if number is not None and math.isfinite(number):
                number += 0.0
                stats["min"] = number if stats["min"] is None else min(stats["min"], number)
                stats["max"] = number if stats["max"] is None else max(stats["max"], number)
    return snapshot


def same(left: drift.Snapshot, right: drift.Snapshot) -> bool:
    """Compare snapshots by repr of their values, so a NaN read from text ("nan") equals itself."""
    def key(snapshot: drift.Snapshot) -> dict[str, tuple[Any, ...]]:
        return {name: (stats["types"], repr(stats["min"]), repr(stats["max"])) for name, stats in snapshot.items()}
    return key(left) == key(right)


numbers = st.floats(allow_nan=False, allow_infinity=False, width=32)
texts = st.one_of(
    numbers.map(str), st.integers(-10**6, 10**6).map(str), st.integers(0, 10**7).map(lambda n: f"{n:,}"),
    st.sampled_from(["bitcoin", "2019-01-01", "", " 12 ", "1_000", "n/a", "1e3", "-0"]), st.text(max_size=6),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**9, 10**9), numbers, texts)
values = st.one_of(scalars, st.lists(scalars, max_size=2),
                   st.dictionaries(st.sampled_from(["USD", "price", "_x"]), scalars | st.dictionaries(
                       st.sampled_from(["price", "volume"]), scalars, max_size=2), max_size=2))
records = st.dictionaries(st.sampled_from(NAMES), values, max_size=len(NAMES))
# Batches where most records share one shape, as CSV batches do, plus some that do not.
shaped = st.fixed_dictionaries({name: texts for name in ("id", "current_price", "market_cap")})
batches = st.lists(st.one_of(records, shaped, shaped), max_size=30)


@settings(max_examples=300, deadline=None)
@given(batches, batches, st.sampled_from([0.0, 0.5, 0.8, 1.0]))
def test_snapshots_and_findings_match_the_record_by_record_pass(previous: list[dict], current: list[dict],
                                                               threshold: float) -> None:
    parents = drift.parents_of(EXPECTED)
    flat_before = [reference_nested(r) for r in current]  # a nested schema still walks each record
    assert [drift.flatten(r, EXPECTED) for r in current] == flat_before
    assert [drift.flatten(r, EXPECTED, parents) for r in current] == flat_before
    old, new = reference_observe(flat_before), drift.observe(flat_before)
    assert same(new, old) and list(new) == list(old)  # same fields, same order: renames break ties by it
    before = reference_observe(reference_nested(r) for r in previous) if previous else None
    assert drift.compare(EXPECTED, before, new, threshold) == drift.compare(EXPECTED, before, old, threshold)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(NAMES), texts, max_size=4), max_size=30))
def test_flat_schemas_take_the_comprehension_and_agree(rows: list[dict]) -> None:
    flat_schema = {name: expect("string") for name in ("id", "currency", "date")}

    for row in rows:
        assert drift.flatten(row, flat_schema) == reference_flat(row)
    assert same(drift.observe(rows), reference_observe(rows))
