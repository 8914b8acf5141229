"""`flask etl run --wait` (a line or bar per source, non-zero exit on failure) and `flask etl status`."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from rich.console import Console

from kasparro.follow import BarView, figures
from tests.pipeline.helpers import HEADER, csv_spec, declare

ROW = "bitcoin,2019-04-20,5296.23,1,2\n"


def _invoke(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["etl", *args])


@pytest.mark.usefixtures("worker")
def test_run_wait_prints_a_line_per_source_and_exits_0(app: Flask, sources_file: Path, tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(HEADER + ROW)
    (tmp_path / "b.csv").write_text(HEADER + ROW + "ethereum,2019-04-20,n/a,1,2\n")
    declare(sources_file, {"alpha": csv_spec(tmp_path / "a.csv"), "beta": csv_spec(tmp_path / "b.csv")})

    result = _invoke(app, "run", "--wait", "--timeout", "60")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    # A line per source at start and whenever its figures changed (at most every few seconds), the last at the end.
    alpha = [line for line in lines if line.startswith("  alpha: ")]
    beta = [line for line in lines if line.startswith("  beta: ")]
    assert alpha[-1] == f"  alpha: success/done batches=1/1 extracted=1 loaded=1 rejected=0 read=100% of {len(ROW)} bytes"
    assert beta[-1].startswith("  beta: partial/done ") and "extracted=2 loaded=1 rejected=1" in beta[-1]
    assert len(alpha) == len(set(alpha)) and len(beta) == len(set(beta))
    assert re.search(r"^run \d+ partial: alpha success extracted=1 .*; beta partial extracted=2", result.output, re.MULTILINE)


@pytest.mark.usefixtures("worker")
def test_run_wait_exits_non_zero_naming_the_failed_source_and_why(app: Flask, sources_file: Path,
                                                                  tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(HEADER + ROW)
    declare(sources_file, {"alpha": csv_spec(tmp_path / "a.csv"), "ghost": csv_spec(tmp_path / "missing.csv")})

    result = _invoke(app, "run", "--wait", "--timeout", "60")

    assert result.exit_code == 1, result.output
    assert "  ghost: failed/done " in result.output
    assert re.search(r"ghost failed: .*missing\.csv not found", result.output)
    assert "failed source(s): ghost" in result.output


@pytest.mark.usefixtures("worker")
def test_run_wait_exits_non_zero_when_every_source_fails(app: Flask, sources_file: Path, tmp_path: Path) -> None:
    declare(sources_file, {"ghost": csv_spec(tmp_path / "missing.csv")})

    result = _invoke(app, "run", "--wait", "--timeout", "60")

    assert result.exit_code == 1, result.output
    assert re.search(r"^run \d+ failed: ghost failed", result.output, re.MULTILINE)


def test_the_bars_draw_one_line_per_source_from_the_api_figures() -> None:
    out = io.StringIO()
    view = BarView(Console(file=out, force_terminal=True, width=160))
    progress = {"batches_extracted": 3, "batches_transformed": 2, "batches_loaded": 1, "stage": "extract",
                "unit": "bytes", "done": 250, "total": 1000, "percent": 25.0, "eta_seconds": 30.0}
    run = {"source_runs": [
        {"source": "alpha", "status": "running", "extracted": 300, "loaded": 100, "rejected": 2, "progress": progress},
        {"source": "beta", "status": "queued", "extracted": 0, "loaded": 0, "rejected": 0,
         "progress": {**progress, "stage": "queued", "unit": None, "done": None, "total": None, "percent": None,
                      "eta_seconds": None, "batches_extracted": 0, "batches_loaded": 0}}]}

    view.update(run)
    view.close()

    screen = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.getvalue())
    assert " 25%" in screen and "eta=30s" in screen and "read=25% of 1000 bytes" in screen
    assert figures(run["source_runs"][0]) in screen
    last = screen.split("\r")[-1]
    assert len([line for line in last.splitlines() if line.startswith(("alpha", "beta"))]) == 2


@pytest.mark.usefixtures("worker")
def test_status_shows_every_declared_source_and_the_health_with_the_figures_of_stats(
        app: Flask, sources_file: Path, tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(HEADER + ROW + "ethereum,2019-04-20,n/a,1,2\n")
    declare(sources_file, {"alpha": csv_spec(tmp_path / "a.csv"), "idle": csv_spec(tmp_path / "idle.csv")})
    assert _invoke(app, "run", "--source", "alpha", "--wait").exit_code == 0

    screen = _invoke(app, "status")
    as_json = _invoke(app, "status", "--json")
    stats = app.test_client().get("/stats").get_json()["data"]

    assert screen.exit_code == 0 and as_json.exit_code == 0, screen.output + as_json.output
    lines = screen.output.splitlines()
    (alpha,) = stats["sources"]
    row = next(line for line in lines if line.startswith("alpha "))
    last = alpha["last_run"]
    assert f"#{alpha['last_run_id']}" in row and alpha["last_run_status"] in row
    assert f"read={last['extracted']} loaded={last['loaded']} rejected={last['rejected']}" in row
    assert re.search(rf"\s{alpha['rows_total']}\s+{alpha['rejected_total']}\s*$", row)
    assert re.search(r"^idle\s+csv\s+-\s+never run", screen.output, re.MULTILINE)
    for check in ("database", "broker", "workers", "beat", "last_run"):
        assert re.search(rf"^{check}\s+(ok|FAILING)", screen.output, re.MULTILINE), check
    assert re.search(r"^workers\s+ok\s+test-", screen.output, re.MULTILINE)
    assert "schedule: every 5m 00s; next run unknown" in screen.output
    document = json.loads(as_json.output)
    for found in (document["stats"], stats):
        for source in found["sources"]:
            source.pop("freshness_seconds")
    assert document["stats"] == stats
    assert {entry["name"] for entry in document["sources"]} == {"alpha", "idle"}
    assert document["health"]["status"] in ("ok", "degraded")


@pytest.mark.usefixtures("worker")
def test_run_wait_in_a_terminal_draws_a_bar_per_source(app: Flask, sources_file: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.csv").write_text(HEADER + ROW)
    declare(sources_file, {"alpha": csv_spec(tmp_path / "a.csv"), "ghost": csv_spec(tmp_path / "missing.csv")})
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich then takes the captured output for a terminal

    result = _invoke(app, "run", "--wait", "--timeout", "60")

    screen = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", result.output)
    assert result.exit_code == 1, screen
    assert "━" in screen and not re.search(r"^  alpha: ", screen, re.MULTILINE)
    final = screen.split("\r")[-1]
    assert re.search(r"^alpha\s.*100%.*success/done", final, re.MULTILINE), final
    assert re.search(r"^ghost\s.*\s0%\s+failed/done", final, re.MULTILINE), final
