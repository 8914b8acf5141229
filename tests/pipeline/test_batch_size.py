"""How many records a raw batch holds: the source's own `batch_size`, else BATCH_SIZE, else its kind's default."""
from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from kasparro import tasks
from kasparro.sources.base import DEFAULT_BATCH_SIZE
from tests.pipeline.helpers import HEADER, csv_spec, declare
from tests.pipeline.inprocess import start


@pytest.mark.parametrize(("own", "configured", "expected"), [
    (None, None, 20_000),  # a CSV file's raw chunks: larger than a page by default
    (None, 300, 300),      # BATCH_SIZE set: every kind
    (7, 300, 7),           # the source's own setting first
])
def test_a_csv_files_chunks_take_the_sources_size_else_batch_size_else_the_kinds_default(
        app: Flask, sources_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own: int | None,
        configured: int | None, expected: int) -> None:
    path = tmp_path / "daily.csv"
    path.write_text(HEADER + "bitcoin,2019-04-20,1.5,1,2\n")
    declare(sources_file, {"daily": csv_spec(path, **({} if own is None else {"batch_size": own}))})
    monkeypatch.setitem(app.config, "BATCH_SIZE", configured)  # the app is the session's: put it back after
    with app.app_context():
        stages = start("daily")

        assert tasks._batch_size(stages.source_run(), stages.source) == expected
        # A kind without a default of its own (pages of an API, records of a JSON file) takes 5,000.
        assert tasks._batch_size(stages.source_run(), object()) == (own or configured or DEFAULT_BATCH_SIZE)
