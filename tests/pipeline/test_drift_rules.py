"""The pure drift comparison: renames by name and value profile, type changes, added and missing fields."""
from __future__ import annotations

import pytest

from kasparro.errors import SourceConfigError
from kasparro.pipeline import drift
from kasparro.sources.base import expect

EXPECTED = {"id": expect("string"), "current_price": expect("number"), "market_cap": expect("number|null")}


def shape(*records: dict) -> drift.Snapshot:
    return drift.observe(drift.flatten(r, EXPECTED) for r in records)


def test_camel_snake_and_reordered_names_are_the_same_words() -> None:
    assert drift.tokens("currentPrice") == ["current", "price"]
    assert drift.name_similarity("current_price", "currentPrice") == 1.0
    assert drift.name_similarity("current_price", "price_current") == 1.0
    assert drift.name_similarity("current_price", "image") < 0.3


def test_a_renamed_field_with_the_same_values_is_a_confident_rename() -> None:
    previous = shape({"id": "btc", "current_price": 64000.5, "market_cap": 1})
    current = shape({"id": "btc", "currentPrice": 64100.0, "market_cap": 1})

    found = drift.compare(EXPECTED, previous, current)

    assert found == [drift.Drift("renamed", "current_price", "current_price", "currentPrice", 1.0)]


def test_a_rename_whose_values_do_not_overlap_scores_lower() -> None:
    previous = shape({"id": "btc", "current_price": 64000.5, "market_cap": 1})
    far = shape({"id": "btc", "currentPrice": 0.001, "market_cap": 1})

    (found,) = drift.compare(EXPECTED, previous, far)

    assert found.kind == "renamed" and found.confidence == 0.85


def test_below_the_threshold_nothing_is_guessed() -> None:
    current = shape({"id": "btc", "price": 64000.5, "market_cap": 1})

    found = drift.compare(EXPECTED, None, current, threshold=0.8)

    assert [(d.kind, d.field) for d in found] == [("missing", "current_price"), ("added", "price")]


def test_a_csv_header_change_is_missing_and_added_at_the_default_threshold() -> None:
    expected = {"close": expect("string")}
    current = drift.observe([{"Close Price": "64000.5"}])

    found = drift.compare(expected, drift.observe([{"close": "63000"}]), current)
    lenient = drift.compare(expected, None, current, threshold=0.6)

    assert [(d.kind, d.field) for d in found] == [("missing", "close"), ("added", "Close Price")]
    assert [(d.kind, d.new) for d in lenient] == [("renamed", "Close Price")]


def test_a_number_sent_as_a_string_and_null_where_numbers_were_are_type_changes() -> None:
    previous = shape({"id": "btc", "current_price": 1.5, "market_cap": 10})
    current = shape({"id": "btc", "current_price": "1.5", "market_cap": None})

    found = drift.compare(EXPECTED, previous, current)

    assert found == [drift.Drift("type_changed", "current_price", "number", "string"),
                     drift.Drift("type_changed", "market_cap", "number", "null")]


def test_a_field_new_since_the_previous_snapshot_is_added_but_not_on_the_first_batch() -> None:
    current = shape({"id": "btc", "current_price": 1.5, "market_cap": 1, "image": "x"})

    assert drift.compare(EXPECTED, None, current) == []
    assert drift.compare(EXPECTED, shape({"id": "a", "current_price": 1, "market_cap": 1}), current) == [
        drift.Drift("added", "image", None, "image")]


def test_nested_fields_are_compared_by_dotted_path_and_remapped_in_place() -> None:
    expected = {"quotes.USD.price": expect("number")}
    payload = {"quotes": {"USD": {"last_price": 2.0}}}

    (found,) = drift.compare(expected, None, drift.observe([drift.flatten(payload, expected)]), threshold=0.7)

    assert (found.kind, found.new) == ("renamed", "quotes.USD.last_price")
    assert drift.remap(payload, {found.new: found.old}) == {"quotes": {"USD": {"price": 2.0}}}
    assert payload == {"quotes": {"USD": {"last_price": 2.0}}}


@pytest.mark.parametrize("spec", [{"drift_policy": "ignore"}, {"drift_confidence": 1.5},
                                  {"drift_confidence": "high"}])
def test_a_policy_that_cannot_work_is_refused(spec: dict) -> None:
    with pytest.raises(SourceConfigError):
        drift.policy_of(spec, "x")


def test_the_default_policy_is_warn_at_080() -> None:
    assert drift.policy_of({}) == drift.Policy("warn", 0.8)
