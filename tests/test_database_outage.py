"""Which database errors are an outage (the run waits for the reaper) and which are the statement's own (it fails).

Past its retries a stage that met an outage leaves its source run to the reaper: the outage says
nothing of the source, and failing the run would depend on whether the database was back by the
time the failure was written. Every error here is raised by a real PostgreSQL, or a real refused port.
"""
from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from kasparro.tasks import _database_unreachable
from tests.conftest import DATABASE_URL


def raised(engine: Engine, *statements: str) -> DBAPIError:
    with pytest.raises(DBAPIError) as caught:
        with engine.connect() as connection:
            for statement in statements:
                connection.execute(sa.text(statement))
    return caught.value


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = sa.create_engine(DATABASE_URL.rsplit("/", 1)[0] + "/postgres")
    yield engine
    engine.dispose()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


def test_a_refused_connection_is_an_outage() -> None:
    refused = sa.create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{closed_port()}/postgres")
    assert _database_unreachable(raised(refused, "SELECT 1"))


def test_a_connection_cut_by_the_server_mid_statement_is_an_outage(engine: Engine) -> None:
    assert _database_unreachable(raised(engine, "SELECT pg_terminate_backend(pg_backend_pid())"))


@pytest.mark.parametrize("statements", [
    pytest.param(("SET statement_timeout = 10", "SELECT pg_sleep(1)"), id="statement timeout"),
    pytest.param(("SELECT 1/0",), id="division by zero"),
    pytest.param(("CREATE TEMP TABLE t (k int PRIMARY KEY)", "INSERT INTO t VALUES (1), (1)"), id="unique violation"),
    pytest.param(("SELECT nosuch FROM pg_class",), id="undefined column"),
])
def test_a_statements_own_error_is_not_an_outage(engine: Engine, statements: tuple[str, ...]) -> None:
    assert not _database_unreachable(raised(engine, *statements))


def test_errors_that_are_not_the_databases_are_not_an_outage() -> None:
    assert not _database_unreachable(ConnectionError("upstream reset"))
