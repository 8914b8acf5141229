"""The JSON file source: arrays (top level or under a path) and NDJSON, streamed, resumed, with faults as rejects."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kasparro.errors import SourceConfigError
from kasparro.sources import SourceContext, build_source
from kasparro.sources.base import Expected, Page
from kasparro.sources.json_file import JsonSource
from tests.bounded import MIB, Outcome, run_bounded

FIELDS = {"source_asset_id": "id", "observed_at": "t", "price_usd": "quote.USD.price"}


def make_source(path: Path, **settings: Any) -> JsonSource:
    spec = {"kind": "json", "path": str(path), "fields": FIELDS, "settle_seconds": 0, **settings}
    source = build_source("drop", spec, SourceContext())
    assert isinstance(source, JsonSource)
    return source


def read_all(source: JsonSource, cursor: dict[str, Any] | None = None, page_size: int = 100) -> list[Page]:
    return list(source.pages(cursor, page_size))


def items(pages: list[Page]) -> list[Any]:
    return [item for page in pages for item in page.items]


def record(n: int) -> dict[str, Any]:
    return {"id": f"coin-{n}", "t": 1_700_000_000 + n, "quote": {"USD": {"price": n + 0.5}}}


def ndjson(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


# Formats

def test_a_top_level_array_yields_each_object_with_its_index(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps([record(1), record(2)]))

    got = items(read_all(make_source(path)))

    assert [i.payload for i in got] == [record(1), record(2)]
    assert [i.position for i in got] == ["a.json:[0]", "a.json:[1]"]


def test_an_array_under_a_path_is_read_and_mapped_by_nested_paths(tmp_path: Path) -> None:
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"meta": {"items": [9, 9]}, "data": {"quotes": [record(1), record(2)]}}))
    source = make_source(path, records_path="data.quotes", time_unit="s")

    got = items(read_all(source))

    assert [i.payload["id"] for i in got] == ["coin-1", "coin-2"]
    assert source.to_unified(got[0].payload) == {
        "source_asset_id": "coin-1", "price_usd": 1.5,
        "observed_at": datetime.fromtimestamp(1_700_000_001, UTC)}


def test_auto_format_tells_ndjson_from_an_array_by_the_suffix_else_the_first_byte(tmp_path: Path) -> None:
    lines = ndjson(tmp_path / "t.drop", [json.dumps(record(1)), json.dumps(record(2))])
    array = tmp_path / "a.drop"
    array.write_text("\n  " + json.dumps([record(1), record(2)]))
    suffixed = ndjson(tmp_path / "s.jsonl", ["[1]", json.dumps(record(2))])

    assert [i.position for i in items(read_all(make_source(lines)))] == ["t.drop:1", "t.drop:2"]
    assert [i.position for i in items(read_all(make_source(array)))] == ["a.drop:[0]", "a.drop:[1]"]
    assert [i.position for i in items(read_all(make_source(suffixed)))] == ["s.jsonl:1", "s.jsonl:2"]


@pytest.mark.parametrize(("value", "unit", "expected"), [
    (1_704_069_951_995, "ms", datetime(2024, 1, 1, 0, 45, 51, 995000, tzinfo=UTC)),
    (1_704_069_951, "s", datetime(2024, 1, 1, 0, 45, 51, tzinfo=UTC)),
    ("1704069951", "s", datetime(2024, 1, 1, 0, 45, 51, tzinfo=UTC)),
])
def test_epoch_times_are_read_in_the_configured_unit(tmp_path: Path, value: Any, unit: str,
                                                     expected: datetime) -> None:
    source = make_source(tmp_path / "x.json", time_unit=unit)

    assert source.to_unified({"id": "a", "t": value, "quote": {"USD": {"price": 1}}})["observed_at"] == expected


def test_iso_and_date_format_times_are_read(tmp_path: Path) -> None:
    iso = make_source(tmp_path / "x.json")
    dated = make_source(tmp_path / "x.json", date_format="%d/%m/%Y")
    payload = {"id": 7, "t": "01/02/2024", "quote": {"USD": {"price": "3.5"}}}

    assert iso.to_unified({**payload, "t": "2024-02-01T00:00:00Z"})["observed_at"] == "2024-02-01T00:00:00Z"
    assert dated.to_unified(payload) == {"source_asset_id": "7", "price_usd": "3.5",
                                         "observed_at": datetime(2024, 2, 1, tzinfo=UTC)}
    with pytest.raises(ValueError, match="does not match"):
        dated.to_unified({**payload, "t": "2024-02-01"})


def test_a_missing_path_is_a_key_error_naming_it(tmp_path: Path) -> None:
    source = make_source(tmp_path / "x.json")

    with pytest.raises(KeyError, match="quote.USD.price"):
        source.to_unified({"id": "a", "t": "2024-01-01T00:00:00Z", "quote": {"EUR": {"price": 1}}})


def test_the_expected_schema_is_the_configured_paths_with_their_types(tmp_path: Path) -> None:
    source = make_source(tmp_path / "x.json", time_unit="ms")

    assert source.expected_schema() == {"id": Expected(("string", "number")), "t": Expected(("number", "string")),
                                        "quote.USD.price": Expected(("number", "string"))}


@pytest.mark.parametrize("settings", [
    {"fields": {"source_asset_id": "id", "price_usd": "p"}},
    {"fields": {**FIELDS, "colour": "c"}},
    {"format": "xml"},
    {"time_unit": "minutes"},
    {"max_record_bytes": 0},
    {"max_depth": 0},
    {"max_depth": 513},
    {"max_depth": "deep"},
])
def test_bad_settings_are_refused(tmp_path: Path, settings: dict[str, Any]) -> None:
    with pytest.raises(SourceConfigError):
        make_source(tmp_path / "x.json", **settings)


# Faults: one reject each, the rest loads

def test_each_bad_ndjson_line_is_one_reject_with_its_line_and_the_rest_loads(tmp_path: Path) -> None:
    path = tmp_path / "t.ndjson"
    path.write_bytes(b"\n".join([json.dumps(record(1)).encode(), b"not json", b"[1, 2]",
                                 b'{"id": "caf\xe9"}', b"", json.dumps(record(2)).encode(), b""]))

    got = items(read_all(make_source(path)))

    assert [(i.position, i.error is None) for i in got] == [
        ("t.ndjson:1", True), ("t.ndjson:2", False), ("t.ndjson:3", False), ("t.ndjson:4", False),
        ("t.ndjson:6", True)]
    assert "line 2 at byte offset" in got[1].error and "is not JSON" in got[1].error
    assert "is an array, not an object" in got[2].error
    assert "byte 0xe9" in got[3].error and "not valid UTF-8" in got[3].error
    assert got[1].payload["_prefix"] == "not json\n"


def test_an_ndjson_line_over_the_size_bound_is_rejected_without_being_kept(tmp_path: Path) -> None:
    big = json.dumps({**record(2), "pad": "x" * 5000})
    path = ndjson(tmp_path / "t.ndjson", [json.dumps(record(1)), big, json.dumps(record(3))])

    got = items(read_all(make_source(path, max_record_bytes=1000)))

    assert [i.error is None for i in got] == [True, False, True]
    assert "over max_record_bytes 1000" in got[1].error
    assert got[1].payload["_bytes"] == len(big) + 1 and len(got[1].payload["_prefix"]) <= 1024


def test_array_elements_that_are_not_objects_or_too_big_are_rejects_by_index(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps([record(1), 42, "text", {**record(2), "pad": "x" * 5000}, record(3)]))

    got = items(read_all(make_source(path, max_record_bytes=1000)))

    assert [(i.position, i.error is None) for i in got] == [
        ("a.json:[0]", True), ("a.json:[1]", False), ("a.json:[2]", False), ("a.json:[3]", False),
        ("a.json:[4]", True)]
    assert "element 1" in got[1].error and "is a number, not an object" in got[1].error
    assert "over max_record_bytes 1000" in got[3].error


def test_a_syntax_error_in_an_array_keeps_what_came_before_and_rejects_the_rest_once(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    good = json.dumps([record(1), record(2)])[:-1]
    path.write_text(good + ', {"id": oops}, ' + json.dumps(record(3)) + "]")
    source = make_source(path)

    pages = read_all(source)
    got = items(pages)

    assert [i.payload for i in got[:2]] == [record(1), record(2)]
    (broken,) = got[2:]
    assert broken.position == "a.json:[2]"
    assert "JSON syntax error at element 2, between byte offsets 0 and" in broken.error
    assert broken.payload["_from_byte"] == 0
    # Unchanged since: nothing more to read, and no second reject.
    assert read_all(source, pages[-1].cursor) == []


def test_invalid_utf8_inside_an_array_ends_it_as_a_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(b'[{"id": "a", "t": 1, "quote": {"USD": {"price": 1}}}, {"id": "\xff"}]')

    got = items(read_all(make_source(path)))

    assert got[0].error is None
    assert "invalid bytes in UTF8 string" in got[1].error


def test_an_element_nested_past_max_depth_is_one_reject_and_a_deep_sibling_of_the_array_is_no_fault(
        tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    deep = "[" * 10_000 + "]" * 10_000
    path.write_text(f'{{"meta": {deep}, "data": {{"quotes": [{json.dumps(record(1))}, {deep}, '
                    f'{json.dumps(record(2))}]}}}}')

    got = items(read_all(make_source(path, records_path="data.quotes", max_depth=8)))

    assert [i.payload for i in got if i.error is None] == [record(1), record(2)]
    assert got[1].position == "deep.json:[1]" and "nests deeper than max_depth 8" in str(got[1].error)


@pytest.mark.parametrize("chunk", [13, 14, 15, 17, 19, 23, 8192])
def test_surrogate_escapes_split_across_reads_are_told_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              chunk: int) -> None:
    monkeypatch.setattr("kasparro.sources.json_scan.CHUNK", chunk)
    names = ["\\ud83d", "\ud83d", "\U0001F600", "\\\ud83d", "x\ud83d\ud83d\ude00", "\udc00\\"]
    path = tmp_path / "s.json"
    path.write_text(json.dumps([{"n": name} for name in names]))

    got = items(read_all(make_source(path)))

    assert [i.error is None for i in got] == [True, False, True, False, False, False]
    assert [i.payload for i in got if i.error is None] == [{"n": "\\ud83d"}, {"n": "\U0001F600"}]
    assert all("lone UTF-16 surrogate" in str(i.error) for i in got if i.error is not None)


@pytest.mark.parametrize(("content", "reason"), [
    (b"hello", "not JSON: it starts with byte 0x68"),
    (b'{"data": 1}', "no array at records_path 'data.quotes'"),
    (b'{"data": {"quotes": ', "not JSON before the records began"),
])
def test_a_file_that_is_not_json_at_the_start_fails_the_source(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)

    with pytest.raises(SourceConfigError, match=reason):
        read_all(make_source(path, records_path="data.quotes", format="array"))


def test_a_missing_file_fails_the_source(tmp_path: Path) -> None:
    with pytest.raises(SourceConfigError, match="not found"):
        read_all(make_source(tmp_path / "gone.ndjson"))


def test_a_half_written_array_waits_for_its_writer_until_the_file_settles(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps([record(1), record(2)])[:-1] + ', {"id": "coi')

    busy = items(read_all(make_source(path, settle_seconds=3600)))
    settled = items(read_all(make_source(path)))

    assert [i.error for i in busy] == [None, None]
    assert "premature EOF" in settled[-1].error


# Incremental reading

def test_an_appended_ndjson_file_resumes_after_what_was_read(tmp_path: Path) -> None:
    path = ndjson(tmp_path / "t.ndjson", [json.dumps(record(1)), json.dumps(record(2))])
    source = make_source(path)
    first = read_all(source)
    with path.open("a") as handle:
        handle.write(json.dumps(record(3)) + "\n")

    second = items(read_all(source, first[-1].cursor))

    assert [(i.position, i.payload) for i in second] == [("t.ndjson:3", record(3))]


def test_an_unfinished_last_ndjson_line_waits_until_the_file_settles(tmp_path: Path) -> None:
    path = tmp_path / "t.ndjson"
    path.write_text(json.dumps(record(1)) + "\n" + json.dumps(record(2)))

    assert len(items(read_all(make_source(path, settle_seconds=3600)))) == 1
    assert len(items(read_all(make_source(path)))) == 2


def test_a_replaced_ndjson_file_is_read_again_from_the_start(tmp_path: Path) -> None:
    path = ndjson(tmp_path / "t.ndjson", [json.dumps(record(1)), json.dumps(record(2))])
    source = make_source(path)
    first = read_all(source)
    ndjson(path, [json.dumps(record(9)), json.dumps(record(1)), json.dumps(record(2))])

    again = items(read_all(source, first[-1].cursor))

    assert [i.payload["id"] for i in again] == ["coin-9", "coin-1", "coin-2"]


def test_an_unchanged_array_resumes_after_the_elements_consumed(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps([record(n) for n in range(5)]))
    source = make_source(path)
    first, *_ = read_all(source, page_size=2)

    rest = items(read_all(source, first.cursor, page_size=2))

    assert [i.position for i in rest] == ["a.json:[2]", "a.json:[3]", "a.json:[4]"]


def test_a_changed_array_is_read_again_from_its_first_element(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps([record(n) for n in range(3)]))
    source = make_source(path)
    done = read_all(source)[-1].cursor
    path.write_text(json.dumps([record(n) for n in range(4)]))

    again = items(read_all(source, done))

    assert [i.payload["id"] for i in again] == ["coin-0", "coin-1", "coin-2", "coin-3"]


# Streaming

def write_records(path: Path, fmt: str, count: int) -> int:
    """Write `count` padded records as a JSON array or NDJSON; return the file's size."""
    with path.open("w") as handle:
        if fmt == "array":
            handle.write("[" + ",".join(json.dumps({**record(n), "pad": "p" * 200}) for n in range(count)) + "]")
        else:
            handle.writelines(json.dumps({**record(n), "pad": "p" * 200}) + "\n" for n in range(count))
    return path.stat().st_size


def grown(outcome: Outcome) -> int:
    return outcome.peak_bytes - outcome.baseline_bytes


@pytest.mark.parametrize("fmt", ["array", "ndjson"])
def test_a_large_file_is_read_in_memory_that_does_not_grow_with_the_file(tmp_path: Path, fmt: str) -> None:
    small, large = tmp_path / f"small.{fmt}", tmp_path / f"large.{fmt}"
    small_size, large_size = write_records(small, fmt, 10_000), write_records(large, fmt, 40_000)

    # Measured in a child by its resident peak: ijson's C backend allocates where tracemalloc cannot see.
    streamed = [run_bounded("tests.sources.json_readers:count_file", str(p), FIELDS, 100) for p in (small, large)]
    whole = run_bounded("tests.sources.json_readers:count_file_read_whole", str(large), FIELDS, 100)

    assert [o.value for o in (*streamed, whole)] == [10_000, 40_000, 40_000], f"{streamed}; {whole}"
    assert large_size > 10_000_000
    # The measure sees a reader that holds the file: decoding it whole grows the child by more than the file.
    assert grown(whole) > large_size
    # Streaming costs a fixed amount (about 2.5 MiB of lazy imports and buffers), not more for 30,000 more records.
    extra = grown(streamed[1]) - grown(streamed[0])
    assert extra < (large_size - small_size) / 20, f"{extra / MIB:.1f} MiB more for a {large_size / MIB:.0f} MiB file"


# The law: bad NDJSON lines are rejects, good ones load once, the source never fails

line_kinds = st.lists(st.sampled_from(["good", "not_json", "not_object", "bad_utf8", "blank"]), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=line_kinds, cut=st.integers(min_value=0, max_value=40))
def test_ndjson_with_bad_lines_interleaved_loads_every_good_line_once(tmp_path: Path, kinds: list[str],
                                                                      cut: int) -> None:
    samples = {"good": lambda n: json.dumps(record(n)).encode(), "not_json": lambda n: b"{oops %d" % n,
               "not_object": lambda n: b"[%d]" % n, "bad_utf8": lambda n: b'{"id": "\xff%d"}' % n,
               "blank": lambda n: b"   "}
    lines = [samples[kind](n) for n, kind in enumerate(kinds)]
    path = tmp_path / "p.ndjson"
    cut = min(cut, len(lines))
    path.write_bytes(b"".join(line + b"\n" for line in lines[:cut]))
    source = make_source(path)
    first = read_all(source, page_size=3)
    with path.open("ab") as handle:  # the rest arrives later
        handle.write(b"".join(line + b"\n" for line in lines[cut:]))

    got = items(first) + items(read_all(source, first[-1].cursor if first else None, page_size=3))

    good = [n + 1 for n, kind in enumerate(kinds) if kind == "good"]
    bad = [n + 1 for n, kind in enumerate(kinds) if kind not in ("good", "blank")]
    assert [int(i.position.split(":")[1]) for i in got if i.error is None] == good
    assert [int(i.position.split(":")[1]) for i in got if i.error is not None] == bad
    assert all(f"line {int(i.position.split(':')[1])}" in i.error for i in got if i.error and "UTF-8" not in i.error)


# Progress

def test_ndjson_pages_report_bytes_read_since_the_cursor_of_the_file(tmp_path: Path) -> None:
    path = ndjson(tmp_path / "q.ndjson", [json.dumps(record(n)) for n in range(3)])
    (first,) = read_all(make_source(path))
    with path.open("a") as handle:
        handle.write("".join(json.dumps(record(n)) + "\n" for n in range(3, 7)))
    size = path.stat().st_size

    pages = read_all(make_source(path), first.cursor, page_size=2)

    assert first.progress is not None and (first.progress.start, first.progress.done) == (0, first.cursor["offset"])
    assert [(p.progress.done, p.progress.total, p.progress.start, p.progress.unit) for p in pages] == [
        (pages[0].cursor["offset"], size, first.cursor["offset"], "bytes"), (size, size, first.cursor["offset"], "bytes")]


def test_array_pages_report_bytes_the_parser_reached_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps([record(n) for n in range(20_000)]))  # several of the parser's buffers
    size = path.stat().st_size

    pages = read_all(make_source(path), page_size=2_000)

    done = [p.progress.done for p in pages]
    assert done == sorted(done) and 0 < done[0] < size and done[-1] == size
    assert {(p.progress.total, p.progress.start, p.progress.unit) for p in pages} == {(size, 0, "bytes")}
