"""How much a raw batch holds: records (the source's `batch_size`, else BATCH_SIZE, else its kind's default) and
bytes (the source's `max_batch_bytes`, else BATCH_MAX_BYTES)."""
from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from kasparro import stages as task_stages
from kasparro.config import ConfigError, load_config
from kasparro.errors import SourceConfigError
from kasparro.sources.base import DEFAULT_BATCH_BYTES, DEFAULT_BATCH_SIZE
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

        assert task_stages.batch_size(stages.source_run(), stages.source) == expected
        # A kind without a default of its own (pages of an API, records of a JSON file) takes 5,000.
        assert task_stages.batch_size(stages.source_run(), object()) == (own or configured or DEFAULT_BATCH_SIZE)


@pytest.mark.parametrize(("own", "configured", "expected"), [
    (None, DEFAULT_BATCH_BYTES, DEFAULT_BATCH_BYTES),  # BATCH_MAX_BYTES unset: its default
    (None, 300_000, 300_000),                          # BATCH_MAX_BYTES set: every source
    (4096, 300_000, 4096),                             # the source's own max_batch_bytes first
])
def test_a_batchs_byte_budget_is_the_sources_own_else_batch_max_bytes(
        app: Flask, sources_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own: int | None,
        configured: int, expected: int) -> None:
    path = tmp_path / "daily.csv"
    path.write_text(HEADER + "bitcoin,2019-04-20,1.5,1,2\n")
    declare(sources_file, {"daily": csv_spec(path, **({} if own is None else {"max_batch_bytes": own}))})
    monkeypatch.setitem(app.config, "BATCH_MAX_BYTES", configured)
    with app.app_context():
        stages = start("daily")

        assert task_stages.batch_bytes(stages.source_run()) == expected


@pytest.mark.parametrize("wrong", [0, -1, "64MiB", True])
def test_a_byte_budget_that_is_not_a_positive_number_fails_the_source_naming_the_setting(
        app: Flask, sources_file: Path, tmp_path: Path, wrong: object) -> None:
    path = tmp_path / "daily.csv"
    path.write_text(HEADER + "bitcoin,2019-04-20,1.5,1,2\n")
    declare(sources_file, {"daily": csv_spec(path, max_batch_bytes=wrong)})
    with app.app_context():
        stages = start("daily")

        with pytest.raises(SourceConfigError, match="max_batch_bytes must be a positive whole number"):
            task_stages.batch_bytes(stages.source_run())


def test_batch_max_bytes_is_64_mib_unless_set_and_refused_below_a_kib() -> None:
    assert load_config({})["BATCH_MAX_BYTES"] == DEFAULT_BATCH_BYTES == 32 * 1024 * 1024
    assert load_config({"BATCH_MAX_BYTES": "1048576"})["BATCH_MAX_BYTES"] == 1024 * 1024
    with pytest.raises(ConfigError, match="BATCH_MAX_BYTES must be >= 1024"):
        load_config({"BATCH_MAX_BYTES": "100"})
