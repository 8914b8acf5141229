"""A command that cannot build the app says why in its last line, not flask's "No such command 'etl'".

Every process reads the settings the same way: the flask CLI (and gunicorn) through wsgi.py, the Celery
worker, beat and Flower through kasparro.worker; all of them stop on a malformed one with the same line.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


# Settings this module sets or breaks, removed from the test session's environment first.
OURS = {"DATABASE_URL", "LEASE_SECONDS", "BROKER_URL", "RESULT_BACKEND", "REDIS_URL", "APP_ENV", "BATCH_SIZE"}


def flask_etl(*args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """Run `flask --app wsgi etl ARGS` from the checkout with `settings` in its environment."""
    env = {k: v for k, v in os.environ.items() if k not in OURS}
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
    ({"ENABLED_SOURCES": "nosuch"}, "kasparro: ENABLED_SOURCES names unknown sources: nosuch"),
    ({"ENABLED_SOURCES": "coingecko", "SOURCES_FILE": "no-such-sources.toml"},
     "kasparro: sources file no-such-sources.toml not found"),
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


def celery(*args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """Run `celery -A kasparro.worker ARGS` from the checkout with `settings` in its environment."""
    env = {k: v for k, v in os.environ.items() if k not in OURS}
    env.update(ENV_FILE="", **settings)
    # A process that got past the settings would run until stopped: the timeout fails the test instead.
    return subprocess.run([sys.executable, "-m", "celery", "-A", "kasparro.worker", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", ["worker", "beat", "flower"])
@pytest.mark.parametrize(("settings", "line"), [
    ({"LEASE_SECONDS": "x"}, "kasparro: LEASE_SECONDS must be an integer, got 'x'"),
    ({"APP_ENV": "bogus"}, "kasparro: APP_ENV must be one of development, test, production (or unset), got 'bogus'"),
    ({"BROKER_URL": "http://user:hunter2@127.0.0.1:6379/0"},
     "kasparro: BROKER_URL must be redis://... or rediss://..., got http://..."),
    ({"ENABLED_SOURCES": "coingecko,nosuch"}, "kasparro: ENABLED_SOURCES names unknown sources: nosuch"),
])
def test_celery_worker_beat_and_flower_stop_on_a_malformed_setting_with_one_line(
        command: str, settings: dict[str, str], line: str) -> None:
    result = celery(command, **settings)

    assert result.returncode == 3, result.stdout + result.stderr
    # The whole output is that line: no traceback, no Celery banner, no password.
    assert (result.stdout + result.stderr).strip() == line


def test_celery_loads_the_app_with_good_settings() -> None:
    # The control for the test above: the same command line gets past the settings when they are right.
    result = celery("report")

    assert result.returncode == 0, result.stderr
    assert "kasparro.worker" in result.stdout or "software -> celery" in result.stdout
