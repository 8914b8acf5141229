"""A source whose base URL carries credentials fails without its secrets reaching the tables or the API."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from kasparro.db import db
from kasparro.models import RunEvent
from tests.pipeline.helpers import declare, run_now

pytestmark = pytest.mark.usefixtures("worker")

SECRETS = ("hunter2", "s3cr3t-token", "k3y-value")


def closed_port() -> int:
    """Return a local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(("kind", "port"), [
    ("coingecko", closed_port()),
    ("coinpaprika", closed_port()),
    # requests quotes a URL it cannot parse in full, password and all.
    ("coingecko", 99999),
])
def test_a_failing_source_with_credentials_in_its_url_shows_none_of_them(
        app: Flask, sources_file: Path, kind: str, port: int) -> None:
    base_url = f"http://etl:hunter2@127.0.0.1:{port}/api/v3?token=s3cr3t-token&x_cg_demo_api_key=k3y-value"
    declare(sources_file, {"upstream": {"kind": kind, "base_url": base_url, "max_retries": 0,
                                        "backoff_seconds": 0.1, "timeout_seconds": 2}})

    run = run_now(app)
    client = app.test_client()
    with app.app_context():
        events = db.session.execute(select(RunEvent.detail).where(RunEvent.run_id == run.id)).scalars().all()

    assert run.status == "failed" and "127.0.0.1" in run.source_runs[0].error
    stored = json.dumps([run.source_runs[0].error, *events])
    served = client.get(f"/runs/{run.id}").get_data(as_text=True) + client.get("/stats").get_data(as_text=True)
    for secret in SECRETS:
        assert secret not in stored and secret not in served
