"""Schema drift stays bounded whatever a payload holds: thousands of new keys keep drift_max_findings events."""
from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from kasparro.db import db
from kasparro.models import DriftEvent
from kasparro.pipeline import drift
from tests.pipeline.helpers import declare, quote_count, run_now
from tests.pipeline.test_drift_observe import json_kind
from tests.pipeline.test_json_pipeline import drop_spec, tick, write_ndjson

RECORDS, KEYS_EACH = 40, 500  # 20,000 keys no batch had before


def flooded(seed: int) -> list[dict[str, Any]]:
    """Ticks that each carry KEYS_EACH top-level keys of their own, as a hostile vendor might send."""
    rng = random.Random(seed)
    records = []
    for index in range(RECORDS):
        record = {**tick("bitcoin", 2, 42000.0 + index), "t": f"2024-02-{1 + index // 24:02d}T{index % 24:02d}:00:00Z"}
        record.update({f"k{rng.getrandbits(48):x}_{index}_{n}": n for n in range(KEYS_EACH)})
        records.append(record)
    return records


def events(app: Flask) -> list[DriftEvent]:
    with app.app_context():
        found = list(db.session.execute(select(DriftEvent).order_by(DriftEvent.id)).scalars())
        db.session.expunge_all()
        return found


@pytest.mark.usefixtures("worker")
def test_thousands_of_new_keys_keep_drift_max_findings_events_and_one_that_counts_the_rest(
        app: Flask, sources_file: Path, tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "ticks.ndjson", [tick("bitcoin", 1, 42000.5)])
    declare(sources_file, {"ticks": drop_spec(path, drift_max_findings=30)})
    run_now(app)  # the first batch sets the baseline: nothing is "added" on it
    with path.open("a") as handle:
        handle.write("".join(json.dumps(record) + "\n" for record in flooded(seed=19)))

    started = time.monotonic()
    run = run_now(app, timeout=120)
    took = time.monotonic() - started

    found = events(app)
    added = [e for e in found if e.kind == "added"]
    (note,) = [e for e in added if e.new is None]
    assert len(added) == 30 + 1 and all(e.records == 1 for e in added if e is not note)
    assert note.field == f"({RECORDS * KEYS_EACH - 30} more added field(s) not listed, over drift_max_findings=30)"
    assert note.records == RECORDS and note.action == "noted"
    assert quote_count(app, "ticks") == 1 + RECORDS  # the records themselves still load
    (source_run,) = run.source_runs
    assert "drift_max_findings=30" in source_run.error and len(source_run.error) <= 4000
    detail = app.test_client().get(f"/runs/{run.id}").get_json()["data"]
    assert detail["drift_total"] == 31 and len(detail["drift"]) == 31
    assert took < 60, f"the run took {took:.0f} s"


@pytest.mark.usefixtures("worker")
def test_a_run_keeps_drift_max_findings_added_events_across_its_batches(app: Flask, sources_file: Path,
                                                                       tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "ticks.ndjson", [tick("bitcoin", 1, 42000.5)])
    declare(sources_file, {"ticks": drop_spec(path, drift_max_findings=5, batch_size=10)})
    run_now(app)
    with path.open("a") as handle:
        handle.write("".join(json.dumps(record) + "\n" for record in flooded(seed=7)))

    run_now(app, timeout=120)

    added = [e for e in events(app) if e.kind == "added"]
    listed = [e for e in added if e.new is not None]
    notes = [e for e in added if e.new is None]
    assert len(listed) == 5
    assert len(notes) == RECORDS // 10  # one per batch of the run, each naming the setting
    assert sum(int(n.field.split()[0].strip("(")) for n in notes) == RECORDS * KEYS_EACH - 5


@pytest.mark.usefixtures("worker")
def test_a_key_as_long_as_a_record_allows_is_stored_and_shown_cut(app: Flask, sources_file: Path,
                                                                  tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "ticks.ndjson", [tick("bitcoin", 1, 42000.5)])
    declare(sources_file, {"ticks": drop_spec(path)})
    run_now(app)
    with path.open("a") as handle:
        handle.write(json.dumps({**tick("bitcoin", 2, 42001.5), "k" * 50_000: 1, "short": 2}) + "\n")

    run = run_now(app)

    fields = sorted(e.field for e in events(app))
    assert fields == ["k" * 200 + "… (50000 characters)", "short"]
    shown = app.test_client().get(f"/runs/{run.id}").get_json()["data"]["drift"]
    assert sorted(d["field"] for d in shown) == fields


def test_a_bad_drift_max_findings_refuses_the_source_by_name() -> None:
    with pytest.raises(Exception, match="drift_max_findings"):
        drift.policy_of({"drift_max_findings": -1}, "ticks")


names = st.sampled_from(["id", "price", "a", "b", "c", "quotes.USD.price"])
records = st.dictionaries(st.integers(0, 10_000), st.dictionaries(names, st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=3),
    st.lists(st.integers(), max_size=1))), max_size=12)
findings = st.lists(st.builds(drift.Drift, st.sampled_from(["added", "missing", "renamed", "type_changed"]), names,
                              st.none(), st.sampled_from(["null", "boolean", "number", "string", "array", None])),
                    max_size=8)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(flat=records, found=findings)
def test_the_records_each_finding_touches_are_found_in_one_pass_as_touches_would(
        flat: dict[int, dict[str, Any]], found: list[drift.Drift]) -> None:
    assert drift.touched(found, flat) == [[rid for rid, f in flat.items() if shows(d, f)] for d in found]


def shows(finding: drift.Drift, flat: dict[str, Any]) -> bool:
    """Whether a record shows a finding, by what each kind means (the oracle, written apart from `Drift.touches`):
    a missing or renamed field is absent, a type change is the field holding the new type, an added one is there."""
    if finding.kind in ("missing", "renamed"):
        return finding.field not in flat
    if finding.kind == "type_changed":
        return finding.field in flat and json_kind(flat[finding.field]) == finding.new
    return finding.field in flat


def test_telling_which_records_show_each_finding_is_one_pass_not_one_per_finding() -> None:
    flat = {rid: {f"k{rid}_{n}": n for n in range(20)} for rid in range(20_000)}
    found = [drift.Drift("added", name, None, name) for fields in list(flat.values())[::10] for name in fields]

    started = time.perf_counter()
    touched = drift.touched(found, flat)
    took = time.perf_counter() - started

    assert [len(records) for records in touched] == [1] * 40_000
    # A pass over 20,000 records for each of 40,000 findings is 8×10⁸ steps (minutes); one pass is 0.1 s.
    assert took < 3, f"{took:.1f} s"
