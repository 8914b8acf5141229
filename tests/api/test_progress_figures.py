"""How far a source's read got, and its ETA, from the figures stored with each batch."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kasparro.api.summaries import read_progress, stage_of
from kasparro.models import SourceRun

NOW = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)


def source_run(done: int | None, total: int | None, start: int = 0, elapsed: float = 10,
               finished: bool = False, status: str = "running", stage: str | None = "extract") -> SourceRun:
    return SourceRun(source="s", status=status, stage=stage, progress_unit=None if done is None else "bytes",
                     progress_start=None if done is None else start, progress_done=done, progress_total=total,
                     started_at=NOW - timedelta(seconds=elapsed), finished_at=NOW if finished else None)


@pytest.mark.parametrize(("row", "expected"), [
    (source_run(None, None), {"unit": None, "done": None, "total": None, "percent": None, "eta_seconds": None}),
    (source_run(250, 1000), {"unit": "bytes", "done": 250, "total": 1000, "percent": 25.0, "eta_seconds": 30.0}),
    # Resumed at byte 500: the rate is over what this run read.
    (source_run(750, 1000, start=500), {"unit": "bytes", "done": 250, "total": 500, "percent": 50.0,
                                        "eta_seconds": 10.0}),
    (source_run(3, None), {"unit": "bytes", "done": 3, "total": None, "percent": None, "eta_seconds": None}),
    (source_run(0, 1000), {"unit": "bytes", "done": 0, "total": 1000, "percent": 0.0, "eta_seconds": None}),
    (source_run(40, 40, start=40), {"unit": "bytes", "done": 0, "total": 0, "percent": 100.0, "eta_seconds": None}),
    (source_run(1000, 1000, finished=True, status="success"),
     {"unit": "bytes", "done": 1000, "total": 1000, "percent": 100.0, "eta_seconds": None}),
])
def test_read_progress(row: SourceRun, expected: dict[str, object]) -> None:
    assert read_progress(row, NOW) == expected


@given(st.integers(0, 10**9), st.integers(1, 10**9), st.integers(0, 10**6), st.floats(0, 10**5))
def test_the_eta_is_never_negative_and_zero_only_when_all_is_read(start: int, size: int, read: int,
                                                                  elapsed: float) -> None:
    done = start + min(read, size)
    found = read_progress(source_run(done, start + size, start=start, elapsed=elapsed), NOW)

    assert 0 <= found["percent"] <= 100
    if done > start:
        assert found["eta_seconds"] >= 0
        assert (found["eta_seconds"] == 0) == (done == start + size or elapsed * (size - read) / read < 0.05)
    else:
        assert found["eta_seconds"] is None


@pytest.mark.parametrize(("row", "stage"), [
    (source_run(None, None, status="queued", stage=None), "queued"),
    (source_run(1, 2, stage="load"), "load"),
    (source_run(2, 2, finished=True, status="failed", stage=None), "done"),
])
def test_stage_of(row: SourceRun, stage: str) -> None:
    assert stage_of(row) == stage
