"""Fixtures for API tests: the key header, a database session to insert with, and CSV-only sources."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
import uuid

import pytest
from flask import Flask

from kasparro import create_app
from kasparro.db import db
from tests.conftest import API_KEY, QUEUE
from tests.conftest import test_config as config_for
from tests.pipeline.helpers import HEADER, csv_spec, declare

AUTH = {"X-API-Key": API_KEY}


@pytest.fixture
def session(app: Flask) -> Iterator[object]:
    """Insert rows through the app's session; committed when the test's inserts are done."""
    with app.app_context():
        yield db.session
        db.session.rollback()


@pytest.fixture
def csv_sources(sources_file: Path, tmp_path: Path) -> Iterator[Path]:
    """Declare one tiny CSV source, so a queued run never reaches for the network; restore afterwards."""
    original = sources_file.read_text()
    data = tmp_path / "tiny.csv"
    data.write_text(HEADER + "bitcoin,2019-04-20,5296.23,13893183515,93510546402\n"
                    "ethereum,2019-04-20,174.26,6159014000,18409744213\n")
    declare(sources_file, {"tiny": csv_spec(data)})
    yield data
    sources_file.write_text(original)


@pytest.fixture
def make_app(app: Flask, sources_file: Path) -> Iterator[Callable[..., Flask]]:
    """Build extra apps on the test database with some settings changed (a broken broker, no key...)."""
    built: list[Flask] = []

    def build(**overrides: Any) -> Flask:
        other = create_app({**config_for(sources_file), **overrides})
        built.append(other)
        return other

    yield build
    for other in built:
        with other.app_context():
            db.engine.dispose()
    # create_app makes its Celery app the process's current and default one; give both back.
    app.extensions["celery"].set_current()
    app.extensions["celery"].set_default()


@pytest.fixture
def idle_app(make_app: Callable[..., Flask]) -> Iterator[Flask]:
    """An app whose runs go to a queue no worker reads, so they stay queued even if the session worker runs."""
    idle = make_app(TASK_QUEUE=f"{QUEUE}-idle-{uuid.uuid4().hex[:8]}")
    yield idle
    idle.extensions["celery"].control.purge()
