"""Hostile JSON, generated: every reader ends cleanly under 1 GiB, and each bad record is one reject.

The readers (a JSON array file, an NDJSON file, an API body) run in a child process under
`tests/bounded.py`'s memory limit. Each record of a generated payload is good or poisoned one way
(nested up to 100,000 deep, a lone surrogate in a value or a key, NUL, a number out of range, bytes
that are not UTF-8); the law is that no reader dies, raises RecursionError or MemoryError, or lets
through a payload PostgreSQL's JSONB refuses, and that each poisoned record is one reject whose reason
names what is wrong (`max_depth` for nesting) while the good records around it come back as they were.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from kasparro.db import db
from kasparro.pipeline.extract import stored_json
from kasparro.sources.base import MAX_DEPTH, UNREADABLE, RawItem
from tests.bounded import MIB, run_bounded

# What the readers may cost beyond the interpreter and its imports, whatever the input (before: past 1 GiB).
HEADROOM_MIB = 200


def kept(outcome: Any) -> list[tuple[str, str, str]]:
    """What the raw layer keeps of each record read: ("ok", its JSON) or ("reject", its reason), and the JSON."""
    found = []
    for index, (payload, error) in enumerate(outcome.value):
        _, stored = stored_json(RawItem(payload, f"#{index}", error))
        reason = json.loads(stored).get(UNREADABLE)
        found.append(("reject", str(reason), stored) if reason else ("ok", stored, stored))
    return found


def bounded(reader: str, data: bytes) -> Any:
    return run_bounded(f"tests.sources.json_readers:{reader}", data, memory_mib=1024, seconds=60)




# --- generated records -------------------------------------------------------------------------------------

# Past this depth json.loads gives up (RecursionError) and an API body is read element by element by ijson,
# which refuses what json.loads reads (a number out of range, a surrogate sent as bytes) as a syntax error.
PYTHON_DEPTH = 1_500


@dataclass(frozen=True)
class Record:
    """One generated record: its JSON text, how it is poisoned ("good" if not) and how deep it nests."""

    text: bytes
    kind: str = "good"
    depth: int = 0


# What each reader must make of a record of each kind: the words its reject reason holds (None: it loads),
# or "cut" (a syntax error: it and the rest are one reject).
EXPECTED = {
    "good": {"ndjson": None, "array": None, "api": None, "api_by_element": None},
    "deep": {"ndjson": "max_depth", "array": "max_depth", "api": "max_depth", "api_by_element": "max_depth"},
    "lone_value": {"ndjson": "surrogate", "array": "surrogate", "api": "surrogate", "api_by_element": "surrogate"},
    "lone_key": {"ndjson": "surrogate", "array": "surrogate", "api": "surrogate", "api_by_element": "surrogate"},
    "huge_number": {"ndjson": "number", "array": "cut", "api": "number", "api_by_element": "cut"},
    "surrogate_bytes": {"ndjson": "UTF-8", "array": "cut", "api": "surrogate", "api_by_element": "cut"},
    "not_utf8": {"ndjson": "UTF-8", "array": "cut", "api": "not UTF-8", "api_by_element": "cut"},
}
# Text with what JSON allows and JSONB does not: NUL, a backslash before a `u`, emoji sent as surrogate pairs.
# U+FDD0 is left out: the array reader uses that noncharacter to mark a lone surrogate (see json_scan).
WORDS = st.lists(st.one_of(st.characters(max_codepoint=0x1FFFF, exclude_categories=("Cs",),
                                         exclude_characters="\ufdd0"),
                           st.sampled_from(["\\ud83d", "\\", "\x00", "\U0001F600", "\ufffd"])),
                 max_size=6).map("".join)
LONE = st.sampled_from(["\ud83d", "\udc00", "\udbff", "\ud800"])
KINDS = ("good", "good", "good", "deep", "lone_value", "lone_key", "huge_number", "surrogate_bytes", "not_utf8")


def good(n: int, word: str) -> dict[str, Any]:
    return {"id": f"coin-{n}", "name": word, "quotes": {"USD": {"price": n + 0.5}}}


@st.composite
def records(draw: st.DrawFn, n: int) -> Record:
    """Draw a good record or one poisoned one way."""
    word, kind = draw(WORDS), draw(st.sampled_from(KINDS))
    head = json.dumps(good(n, word))[:-1].encode()
    if kind == "deep":
        depth = draw(st.one_of(st.integers(MAX_DEPTH + 1, 900), st.integers(PYTHON_DEPTH, 100_000)))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        return Record(head + b',"deep":' + opener * depth + b"1" + closer * depth + b"}", kind, depth)
    if kind == "lone_value":
        return Record(json.dumps(good(n, word + draw(LONE))).encode(), kind)
    if kind == "lone_key":
        return Record(json.dumps({**good(n, word), draw(LONE) + word: 1}).encode(), kind)
    if kind == "huge_number":
        return Record(head + b',"cap":1e400}', kind)
    if kind == "surrogate_bytes":
        return Record(json.dumps(good(n, word + draw(LONE)), ensure_ascii=False).encode("utf-8", "surrogatepass"),
                      kind)
    if kind == "not_utf8":
        return Record(head + b',"note":"bit\xffcoin"}', kind)
    return Record(json.dumps(good(n, word)).encode())


@st.composite
def documents(draw: st.DrawFn) -> list[Record]:
    return [draw(records(n)) for n in range(draw(st.integers(1, 8)))]


def _without_nul(value: Any) -> Any:
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def check_law(outcome: Any, document: list[Record], reader: str) -> None:
    """Assert the law for one bounded read: clean, bounded, one reject per poisoned record naming why."""
    assert outcome.kind == "returned", str(outcome)
    assert outcome.peak_bytes - outcome.baseline_bytes < HEADROOM_MIB * MIB, str(outcome)
    wanted = [EXPECTED[record.kind][reader] for record in document]
    if "cut" in wanted:
        cut = wanted.index("cut")
        document, wanted = document[:cut + 1], [*wanted[:cut], "JSON syntax error"]
    found = kept(outcome)
    assert len(found) == len(document), found
    for (kind, detail, _), record, reason in zip(found, document, wanted, strict=True):
        if reason is None:
            assert kind == "ok", detail
            assert json.loads(detail) == _without_nul(json.loads(record.text))
        else:
            assert kind == "reject" and reason in detail, (record.text[:200], kind, detail)


def assert_postgres_stores(outcome: Any) -> None:
    """Every payload the raw layer would keep, loaded or rejected, is one PostgreSQL's JSONB accepts."""
    for _, _, payload in kept(outcome):
        db.session.execute(text("SELECT CAST(:payload AS jsonb)"), {"payload": payload})


HYPOTHESIS = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                             HealthCheck.function_scoped_fixture])


@pytest.mark.usefixtures("app_ctx")
@HYPOTHESIS
@given(documents())
def test_an_ndjson_file_of_generated_records_rejects_each_poisoned_line_and_keeps_the_rest(
        document: list[Record]) -> None:
    data = b"".join(record.text + b"\n" for record in document)

    outcome = bounded("read_ndjson", data)

    check_law(outcome, document, "ndjson")
    assert_postgres_stores(outcome)


@pytest.mark.usefixtures("app_ctx")
@HYPOTHESIS
@given(documents())
def test_a_json_array_of_generated_records_rejects_each_poisoned_element_and_keeps_the_rest(
        document: list[Record]) -> None:
    data = b"[" + b",".join(record.text for record in document) + b"]"

    outcome = bounded("read_array", data)

    check_law(outcome, document, "array")
    assert_postgres_stores(outcome)


@pytest.mark.usefixtures("app_ctx")
@HYPOTHESIS
@given(documents())
def test_an_api_body_of_generated_coins_rejects_each_poisoned_coin_and_keeps_the_rest(
        document: list[Record]) -> None:
    data = b"[" + b",".join(record.text for record in document) + b"]"

    outcome = bounded("read_api", data)

    by_element = any(record.depth >= PYTHON_DEPTH for record in document)
    check_law(outcome, document, "api_by_element" if by_element else "api")
    assert_postgres_stores(outcome)


# --- the depths the issue measured --------------------------------------------------------------------------

NEIGHBOURS = (b'{"id":"a"}', b'{"id":"b"}')


@pytest.mark.parametrize("depth", [10_000, 100_000])
@pytest.mark.parametrize("reader", ["read_array", "read_ndjson", "read_api"])
def test_one_record_nested_deeper_than_python_can_follow_is_one_reject_in_bounded_memory(
        reader: str, depth: int) -> None:
    deep = b"[" * depth + b"]" * depth
    data = (b"\n".join((NEIGHBOURS[0], deep, NEIGHBOURS[1])) + b"\n" if reader == "read_ndjson"
            else b"[" + b",".join((NEIGHBOURS[0], deep, NEIGHBOURS[1])) + b"]")

    outcome = bounded(reader, data)

    assert outcome.clean(), str(outcome)
    assert outcome.peak_bytes - outcome.baseline_bytes < HEADROOM_MIB * MIB, str(outcome)
    found = kept(outcome)
    assert [kind for kind, _, _ in found] == ["ok", "reject", "ok"]
    assert f"nests deeper than max_depth {MAX_DEPTH}" in found[1][1]


def test_an_api_body_too_deep_outside_any_array_fails_the_source_naming_the_limit() -> None:
    depth = 5_000
    data = b'{"data":' + b"[" * depth + b"]" * depth + b"}"

    outcome = bounded("read_api", data)

    assert outcome.clean("PayloadError"), str(outcome)
    assert outcome.kind == "raised" and f"max_depth {MAX_DEPTH}" in outcome.message


@pytest.mark.parametrize("reader", ["read_array", "read_ndjson", "read_api"])
def test_a_backslash_before_u_is_text_that_loads_and_a_lone_surrogate_after_it_is_a_reject(reader: str) -> None:
    records = (b'{"id":"a","name":"\\\\ud83d"}', b'{"id":"b","name":"\\\\\\ud83d"}')
    data = b"\n".join(records) + b"\n" if reader == "read_ndjson" else b"[" + b",".join(records) + b"]"

    found = kept(bounded(reader, data))

    assert found[0][:2] == ("ok", '{"id":"a","name":"\\\\ud83d"}')
    assert found[1][0] == "reject" and "surrogate" in found[1][1]


@settings(max_examples=3, deadline=None)
@given(st.integers(50_000, 300_000), st.data())
def test_a_huge_array_streams_in_bounded_memory_and_its_one_poisoned_element_is_one_reject(
        count: int, data: st.DataObject) -> None:
    poisoned = data.draw(st.integers(0, count - 1))
    bad = data.draw(st.sampled_from([b'{"a":' * 50_000 + b"1" + b"}" * 50_000, b'{"id":"\\udc00"}']))
    elements = [b'{"id":%d}' % n for n in range(count)]
    elements[poisoned] = bad

    outcome = bounded("count_array", b"[" + b",".join(elements) + b"]")

    assert outcome.clean(), str(outcome)
    assert outcome.peak_bytes - outcome.baseline_bytes < HEADROOM_MIB * MIB, str(outcome)
    assert outcome.value["loaded"] == count - 1
    ((index, fault),) = outcome.value["faults"]
    assert index == poisoned and ("max_depth" in fault or "surrogate" in fault)
