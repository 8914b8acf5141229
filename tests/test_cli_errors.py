"""A command that cannot build the app says why in its last line, not flask's "No such command 'etl'"."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def flask_etl(*args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """Run `flask --app wsgi etl ARGS` from the checkout with `settings` in its environment."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "LEASE_SECONDS"}}
    env.update(ENV_FILE="", **settings)
    return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "etl", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("settings", "last_line"), [
    ({"LEASE_SECONDS": "x"}, "kasparro: LEASE_SECONDS must be an integer, got 'x'"),
    ({"DATABASE_URL": "postgresql+nosuchdriver://postgres:hunter2@127.0.0.1:5432/k"},
     "kasparro: DATABASE_URL must be postgres://, postgresql:// or postgresql+psycopg2://..., "
     "got postgresql+nosuchdriver://..."),
    ({"DATABASE_URL": "mysql://postgres@127.0.0.1:5432/k"},
     "kasparro: DATABASE_URL must be postgres://, postgresql:// or postgresql+psycopg2://..., got mysql://..."),
])
def test_an_app_that_cannot_be_built_names_the_reason_last(settings: dict[str, str], last_line: str) -> None:
    result = flask_etl("sources", **settings)

    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == last_line
    assert "No such command" not in result.stderr


def test_a_malformed_setting_is_one_line_without_a_traceback() -> None:
    result = flask_etl("init-db", LEASE_SECONDS="x")

    assert result.stderr.strip() == "kasparro: LEASE_SECONDS must be an integer, got 'x'"


def test_init_db_against_an_unreachable_database_says_so_in_one_line() -> None:
    result = flask_etl("init-db", DATABASE_URL="postgresql+psycopg2://postgres:hunter2@127.0.0.1:1/kasparro")

    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: cannot reach the database postgresql+psycopg2://postgres:***@127.0.0.1:1/kasparro")
    assert "Connection refused" in last


def test_the_documented_command_still_works_with_good_settings() -> None:
    result = flask_etl("sources")

    assert result.returncode == 0, result.stderr
    assert "coingecko" in result.stdout
