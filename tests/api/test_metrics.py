"""GET /metrics: request metrics plus ETL figures read from Postgres, in one process and across several."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families

from kasparro.db import db
from tests.api import factories as f
from tests.conftest import ROOT
from tests.conftest import test_config as config_for


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_expose_etl_figures_from_the_database(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        f.run("success", ("api",), inserted=40, rejected=2, requests=5, retries=1, throttled=1, wait_seconds=1.5)
        f.run("failed", ("api", "csv"), inserted=0)
        db.session.commit()

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    samples = _samples(response.get_data(as_text=True))
    assert samples[("kasparro_database_up", ())] == 1
    assert samples[("kasparro_runs", (("status", "success"),))] == 1
    assert samples[("kasparro_runs", (("status", "failed"),))] == 1
    assert samples[("kasparro_quote_rows_total", (("source", "api"),))] == 40
    assert samples[("kasparro_rejected_records_total", (("source", "api"),))] == 2
    assert samples[("kasparro_source_requests_total", (("source", "api"),))] == 5
    assert samples[("kasparro_source_retries_total", (("source", "api"),))] == 1
    assert samples[("kasparro_source_throttled_responses_total", (("source", "api"),))] == 1
    assert samples[("kasparro_source_wait_seconds_total", (("source", "api"),))] == 1.5
    assert ("kasparro_last_success_timestamp_seconds", (("source", "api"),)) in samples
    assert ("kasparro_last_failure_timestamp_seconds", (("source", "csv"),)) in samples


def test_requests_are_counted_by_route(client: FlaskClient) -> None:
    client.get("/health/live")
    client.get("/runs/424242")

    samples = _samples(client.get("/metrics").get_data(as_text=True))

    live = [v for (name, labels), v in samples.items()
            if name == "kasparro_http_request_duration_seconds_count" and ("url_rule", "/health/live") in labels]
    missing_run = [labels for (name, labels), _ in samples.items()
                   if name == "kasparro_http_request_duration_seconds_count" and ("status", "404") in labels]
    assert live and live[0] >= 1
    assert any(("url_rule", "/runs/<int:run_id>") in labels for labels in missing_run)


def test_a_scrape_answers_even_when_the_database_is_down(make_app: Callable[..., Flask]) -> None:
    no_db = make_app(SQLALCHEMY_DATABASE_URI="postgresql+psycopg2://postgres@127.0.0.1:1/none")

    response = no_db.test_client().get("/metrics")

    assert response.status_code == 200
    assert _samples(response.get_data(as_text=True))[("kasparro_database_up", ())] == 0


_CHILD = """
import os, sys
os.environ["ENV_FILE"] = ""
from kasparro import create_app
app = create_app({"SQLALCHEMY_DATABASE_URI": sys.argv[1], "API_KEY": None})
for _ in range(3):
    assert app.test_client().get("/health/live").status_code == 200
"""


def test_multiprocess_mode_merges_every_process_requests(app: Flask, sources_file: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         make_app: Callable[..., Flask]) -> None:
    # As under gunicorn: each process writes its own files, the scrape adds them up.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
    database = config_for(sources_file)["SQLALCHEMY_DATABASE_URI"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", _CHILD, database], env=env, check=True, cwd=ROOT, timeout=60)
    here = make_app()
    here.test_client().get("/health/live")

    samples = _samples(here.test_client().get("/metrics").get_data(as_text=True))

    live = sum(v for (name, labels), v in samples.items()
               if name == "kasparro_http_request_duration_seconds_count" and ("url_rule", "/health/live") in labels)
    assert live == 4
    assert samples[("kasparro_database_up", ())] == 1
