"""Every pipeline log line names its run, source run, task and source, in the console format as in JSON."""
from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from kasparro import logs
from tests.pipeline.helpers import HEADER, csv_spec, declare


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, restored after the test re-configures it."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    # An app built by an earlier test left warnings captured, through a hook pytest has since replaced.
    logging.captureWarnings(False)
    yield root
    logging.captureWarnings(False)
    root.handlers, root.level = saved


def log_one_bound_line(log_format: str) -> None:
    app = Flask(__name__)
    app.config.update(LOG_FORMAT=log_format, LOG_LEVEL="INFO")
    logs.init_app(app)
    logs._bind_task(task_id="t-1", task=None)
    logs.bind(run_id=7, source="coingecko", source_run_id=12, stage="load")
    try:
        logging.getLogger("kasparro.test").info("batch loaded")
    finally:
        logs._clear_task()
    logging.getLogger("kasparro.test").info("after the task")


@pytest.mark.usefixtures("root_logger")
def test_console_lines_carry_the_bound_context(capsys: pytest.CaptureFixture[str]) -> None:
    log_one_bound_line("console")

    bound, after = capsys.readouterr().err.strip().splitlines()[-2:]
    assert bound.endswith("batch loaded [run_id=7 source_run_id=12 source=coingecko stage=load task_id=t-1]")
    assert after.endswith("after the task")


@pytest.mark.usefixtures("root_logger")
def test_json_lines_carry_the_bound_context(capsys: pytest.CaptureFixture[str]) -> None:
    log_one_bound_line("json")

    line = json.loads(capsys.readouterr().err.strip().splitlines()[-2])
    assert {k: line[k] for k in ("run_id", "source_run_id", "task_id", "source")} == {
        "run_id": 7, "source_run_id": 12, "task_id": "t-1", "source": "coingecko"}


@pytest.mark.usefixtures("root_logger")
def test_a_python_warning_is_a_json_line_like_any_other(capsys: pytest.CaptureFixture[str]) -> None:
    app = Flask(__name__)
    app.config.update(LOG_FORMAT="json", LOG_LEVEL="INFO")
    logs.init_app(app)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("running as root", UserWarning, stacklevel=1)

    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert (line["level"], line["name"]) == ("WARNING", "py.warnings") and "running as root" in line["message"]


@pytest.mark.usefixtures("worker")
def test_the_workers_lines_about_a_run_name_it(app: Flask, worker: object, sources_file: Path,
                                               tmp_path: Path) -> None:
    path = tmp_path / "daily.csv"
    path.write_text(HEADER + "bitcoin,2019-04-20,5296.23,1,2\n")
    declare(sources_file, {"logged": csv_spec(path)})

    result = app.test_cli_runner().invoke(args=["etl", "run", "--source", "logged", "--wait", "--timeout", "60"])

    assert result.exit_code == 0, result.output
    run_id = re.search(r"run (\d+) queued", result.output).group(1)
    lines = [line for line in Path(worker.log_path).read_text().splitlines()  # type: ignore[attr-defined]
             if f"run_id={run_id} " in line and "source=logged" in line]
    assert lines, "no worker line names the run"
    assert all(re.search(r"source_run_id=\d+ .*task_id=[0-9a-f-]{36}", line) for line in lines)
