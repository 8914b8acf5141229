"""DATABASE_READ_URL: the API's reads come from it, its writes and /health stay on DATABASE_URL."""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from kasparro.db import db
from kasparro.migrate import drop_database, init_db
from kasparro.models import Run
from tests.api import factories as f
from tests.api.conftest import AUTH
from tests.conftest import DATABASE_URL, QUEUE


@pytest.fixture
def read_database(make_app: Callable[..., Flask]) -> Iterator[str]:
    """A second database built by the migrations, standing in for a replica."""
    url = DATABASE_URL + "_read"
    init_db(make_app(SQLALCHEMY_DATABASE_URI=url))
    yield url
    drop_database(url)


def _slug_only_in(application: Flask, slug: str) -> None:
    with application.app_context():
        f.asset(slug)
        db.session.commit()


def _runs(application: Flask) -> int:
    with application.app_context():
        return db.session.execute(select(func.count()).select_from(Run)).scalar_one()


def test_with_a_read_url_reads_come_from_it_and_writes_go_to_the_database(
        app: Flask, make_app: Callable[..., Flask], read_database: str, csv_sources: Path) -> None:
    replica = make_app(SQLALCHEMY_DATABASE_URI=read_database)
    _slug_only_in(app, "only-in-the-database")
    _slug_only_in(replica, "only-in-the-replica")
    reader = make_app(DATABASE_READ_URL=read_database, TASK_QUEUE=f"{QUEUE}-idle-{uuid.uuid4().hex[:8]}")
    client = reader.test_client()

    assets = [row["slug"] for row in client.get("/assets").get_json()["data"]]
    posted = client.post("/run-etl", json={"sources": ["tiny"]}, headers=AUTH)
    shown = client.get(f"/runs/{posted.get_json()['data']['run_id']}")  # not replicated here, so not there
    health = client.get("/health").get_json()["data"]
    reader.extensions["celery"].control.purge()

    assert assets == ["only-in-the-replica"]
    assert posted.status_code == 202 and (_runs(app), _runs(replica)) == (1, 0)
    assert shown.status_code == 404
    # /health reads the database the writes go to: it knows the run just posted
    assert health["checks"]["last_run"]["details"]["run_id"] == posted.get_json()["data"]["run_id"]


def test_without_a_read_url_reads_come_from_the_database(app: Flask, make_app: Callable[..., Flask]) -> None:
    _slug_only_in(app, "only-in-the-database")

    assets = make_app().test_client().get("/assets").get_json()["data"]

    assert [row["slug"] for row in assets] == ["only-in-the-database"]
