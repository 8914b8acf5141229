"""ENABLED_SOURCES narrows the sources sources.toml enables; it cannot switch on one the file disables."""
from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from kasparro import catalog
from kasparro.errors import SourceConfigError
from tests.pipeline.helpers import csv_spec, declare


def declared(tmp_path: Path) -> Path:
    """A sources.toml with two enabled sources and one declared `enabled = false`."""
    path = tmp_path / "sources.toml"
    declare(path, {"daily": csv_spec(tmp_path / "daily.csv"), "hourly": csv_spec(tmp_path / "hourly.csv"),
                   "retired": csv_spec(tmp_path / "retired.csv", enabled=False)})
    return path


def settings(path: Path, enabled: list[str]) -> dict[str, object]:
    return {"SOURCES_FILE": str(path), "ENABLED_SOURCES": enabled}


def test_without_enabled_sources_the_file_decides(tmp_path: Path) -> None:
    config = settings(declared(tmp_path), [])

    assert sorted(catalog.declared_sources(config)) == ["daily", "hourly"]
    listing = {entry["name"]: entry["enabled"] for entry in catalog.source_listing(config)}
    assert listing == {"daily": True, "hourly": True, "retired": False}


def test_enabled_sources_narrows_the_enabled_ones(tmp_path: Path) -> None:
    assert list(catalog.declared_sources(settings(declared(tmp_path), ["hourly"]))) == ["hourly"]


def test_enabled_sources_naming_a_disabled_source_is_refused_naming_it(tmp_path: Path) -> None:
    config = settings(declared(tmp_path), ["daily", "retired"])

    for read in (catalog.declared_sources, catalog.source_listing, lambda c: catalog.select_sources(c, None)):
        with pytest.raises(SourceConfigError, match=r"disabled in SOURCES_FILE \(enabled = false\): retired;"):
            read(config)


def test_a_run_of_a_disabled_source_is_refused_through_the_cli(app: Flask, sources_file: Path,
                                                                 tmp_path: Path) -> None:
    declare(sources_file, {"daily": csv_spec(tmp_path / "daily.csv"),
                           "retired": csv_spec(tmp_path / "retired.csv", enabled=False)})
    app.config["ENABLED_SOURCES"] = ["retired"]
    try:
        result = app.test_cli_runner().invoke(args=["etl", "run"])
    finally:
        app.config["ENABLED_SOURCES"] = []

    assert result.exit_code != 0
    assert "enabled = false" in result.output and "retired" in result.output
