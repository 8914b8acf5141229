"""Which database errors are an outage (the run waits for the reaper) and which are the statement's own (it fails).

Past its retries a stage that met an outage leaves its source run to the reaper: the outage says
nothing of the source, and failing the run would depend on whether the database was back by the
time the failure was written. Every error here is raised by a real PostgreSQL, or a real refused port.
"""
from __future__ import annotations

import socket
from collections.abc import Iterator

import psycopg2
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, PendingRollbackError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from kasparro.pipeline.outage import database_unreachable
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
    assert database_unreachable(raised(refused, "SELECT 1"))


def test_a_bare_driver_error_of_a_lost_connection_is_an_outage() -> None:
    # The COPY paths use the driver's cursor, whose errors reach the task unwrapped by SQLAlchemy.
    with pytest.raises(psycopg2.OperationalError) as caught:
        psycopg2.connect(host="127.0.0.1", port=closed_port(), user="postgres", dbname="postgres")
    assert database_unreachable(caught.value)


def test_a_connection_cut_by_the_server_mid_statement_is_an_outage(engine: Engine) -> None:
    assert database_unreachable(raised(engine, "SELECT pg_terminate_backend(pg_backend_pid())"))


@pytest.mark.parametrize("statements", [
    pytest.param(("SET statement_timeout = 10", "SELECT pg_sleep(1)"), id="statement timeout"),
    pytest.param(("SELECT 1/0",), id="division by zero"),
    pytest.param(("CREATE TEMP TABLE t (k int PRIMARY KEY)", "INSERT INTO t VALUES (1), (1)"), id="unique violation"),
    pytest.param(("SELECT nosuch FROM pg_class",), id="undefined column"),
])
def test_a_statements_own_error_is_not_an_outage(engine: Engine, statements: tuple[str, ...]) -> None:
    assert not database_unreachable(raised(engine, *statements))


def test_errors_that_are_not_the_databases_are_not_an_outage() -> None:
    assert not database_unreachable(ConnectionError("upstream reset"))


def test_a_transaction_carried_on_after_its_connection_was_cut_is_an_outage(engine: Engine) -> None:
    # Code that caught the disconnect and went on in the same transaction meets SQLAlchemy's "Can't
    # reconnect until invalid transaction is rolled back": the outage, told late.
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))
        with pytest.raises(DBAPIError):
            connection.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))
        with pytest.raises(PendingRollbackError) as caught:
            connection.execute(sa.text("SELECT 1"))
    assert database_unreachable(caught.value)


class _Base(DeclarativeBase):
    pass


class _Row(_Base):
    __tablename__ = "t"
    k: Mapped[int] = mapped_column(primary_key=True)


def test_a_session_carried_on_after_its_own_failed_flush_is_not_an_outage(engine: Engine) -> None:
    # The same late error after a statement's own failure (a duplicate key) is the statement's, not an outage.
    with Session(engine) as session:
        session.execute(sa.text("CREATE TEMP TABLE t (k int PRIMARY KEY)"))
        session.add_all([_Row(k=1)])
        session.flush()
        session.add(_Row(k=1))
        with pytest.raises(DBAPIError):
            session.flush()
        with pytest.raises(PendingRollbackError) as caught:
            session.execute(sa.text("SELECT 1"))
    assert not database_unreachable(caught.value)
