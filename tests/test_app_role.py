"""The compose stack's app connects as a role that owns its database but is no superuser (docker/app_role.py).

Run against the test PostgreSQL server: the migrate job's steps, in its order, on a database of our own.
"""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy.engine import make_url

from kasparro.migrate import drop_database
from tests.conftest import DATABASE_URL

ROOT = Path(__file__).resolve().parent.parent
SERVER = make_url(DATABASE_URL).set(database="postgres")


@pytest.fixture
def names() -> Iterator[dict[str, str]]:
    """A database and a role of this test's own; both gone afterwards (roles are cluster-wide)."""
    tag = uuid.uuid4().hex[:8]
    found = {"database": f"kasparro_role_{tag}", "role": f"kasparro_app_{tag}", "password": uuid.uuid4().hex}
    yield found
    drop_database(SERVER.set(database=found["database"]).render_as_string(hide_password=False))
    with closing(connect(SERVER)) as conn, conn.cursor() as cursor:
        cursor.execute(f'DROP ROLE IF EXISTS "{found["role"]}"')


def connect(url, **login: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(host=url.host, port=url.port or 5432, user=login.get("user", url.username),
                            password=login.get("password", url.password), dbname=login.get("dbname", url.database))
    conn.autocommit = True
    return conn


def app_url(names: dict[str, str]) -> str:
    return SERVER.set(username=names["role"], password=names["password"],
                      database=names["database"]).render_as_string(hide_password=False)


def run(command: list[str], names: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ENV_FILE": "", "DATABASE_URL": app_url(names),
           "ADMIN_DATABASE_URL": SERVER.render_as_string(hide_password=False)}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)


def migrate_job(names: dict[str, str]) -> None:
    """Do what the compose migrate job does: hand the database to the role, then migrate as the role."""
    for command in ([sys.executable, "docker/app_role.py"], [sys.executable, "-m", "flask", "--app", "wsgi", "etl",
                                                             "init-db"]):
        done = run(command, names)
        assert done.returncode == 0, done.stdout + done.stderr


def as_app(names: dict[str, str], statement: str) -> list[tuple]:
    with closing(connect(SERVER, user=names["role"], password=names["password"], dbname=names["database"])) as conn:
        with conn.cursor() as cursor:
            cursor.execute(statement)
            return cursor.fetchall() if cursor.description else []


def assert_owner_but_no_superuser(names: dict[str, str]) -> None:
    assert as_app(names, "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user") \
        == [(False, False, False)]
    # What made the superuser dangerous: running a program on the database host.
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        as_app(names, "COPY (SELECT 1) TO PROGRAM 'true'")
    # What the app needs: its own rows, and owner-only maintenance of its own tables.
    as_app(names, "INSERT INTO assets (slug, symbol, name) VALUES ('role-test', 'RT', 'Role test')")
    as_app(names, "ANALYZE market_quotes")
    as_app(names, "SELECT brin_summarize_new_values(inhrelid::regclass) FROM pg_inherits"
                  " WHERE inhparent = 'ix_market_quotes_run_id_brin'::regclass")
    # and the daily partition upkeep's DDL: a month made, and dropped again
    as_app(names, "CREATE TABLE market_quotes_1999_01 PARTITION OF market_quotes"
                  " FOR VALUES FROM ('1999-01-01 00:00+00') TO ('1999-02-01 00:00+00')")
    as_app(names, "ALTER TABLE market_quotes DETACH PARTITION market_quotes_1999_01")
    as_app(names, "DROP TABLE market_quotes_1999_01")
    assert as_app(names, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner <> current_user") \
        == [(0,)]


def test_a_fresh_volume_is_migrated_by_the_app_role_which_owns_it_and_is_no_superuser(names: dict[str, str]) -> None:
    migrate_job(names)

    assert_owner_but_no_superuser(names)


def test_a_volume_migrated_by_the_superuser_before_is_handed_over_on_the_next_make_up(names: dict[str, str]) -> None:
    # What `make up` did before: the superuser created and migrated everything.
    superuser_url = SERVER.set(database=names["database"]).render_as_string(hide_password=False)
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "etl", "init-db"], cwd=ROOT,
                          env={**os.environ, "ENV_FILE": "", "DATABASE_URL": superuser_url}, capture_output=True,
                          text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr

    migrate_job(names)
    migrate_job(names)  # every `make up` runs it: twice changes nothing

    assert_owner_but_no_superuser(names)
