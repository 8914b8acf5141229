"""The `flask etl` commands: queue a run from a terminal and follow its progress."""
from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from tests.pipeline.helpers import HEADER, csv_spec, declare


@pytest.mark.usefixtures("worker")
def test_etl_run_wait_follows_the_run_to_its_end(app: Flask, sources_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "daily.csv"
    path.write_text(HEADER + "bitcoin,2019-04-20,5296.23,1,2\nbitcoin,2019-04-21,n/a,1,2\n")
    declare(sources_file, {"daily": csv_spec(path)})

    result = app.test_cli_runner().invoke(args=["etl", "run", "--source", "daily", "--wait", "--timeout", "60"])

    assert result.exit_code == 0, result.output
    assert "run 1 queued: daily" in result.output
    assert "run 1 partial: daily partial extracted=2 loaded=1 rejected=1" in result.output


def test_etl_run_names_an_unknown_source(app: Flask, sources_file: Path, tmp_path: Path) -> None:
    declare(sources_file, {"daily": csv_spec(tmp_path / "daily.csv")})

    result = app.test_cli_runner().invoke(args=["etl", "run", "--source", "nope"])

    assert result.exit_code != 0
    assert "unknown or disabled sources: nope" in result.output


def test_etl_sources_lists_what_is_enabled(app: Flask, sources_file: Path, tmp_path: Path) -> None:
    declare(sources_file, {"daily": csv_spec(tmp_path / "daily.csv")})

    result = app.test_cli_runner().invoke(args=["etl", "sources"])

    assert result.exit_code == 0
    assert "daily" in result.output and "csv" in result.output
