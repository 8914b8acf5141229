"""Start the servers `make run` and `make test` need when none are configured, then run a command with them.

    python -m kasparro.embedded run -- honcho start      # DATABASE_URL / BROKER_URL unset: start both
    python -m kasparro.embedded test -- pytest          # TEST_DATABASE_SERVER / TEST_BROKER_URL unset: same
    python -m kasparro.embedded bench -- python -m bench # BENCH_DATABASE_SERVER / BENCH_BROKER_URL unset: same
    python -m kasparro.embedded use -- flask etl status  # reach the servers a running `make run` started

A configured URL is used as it is and nothing is started for it. Started servers live under `var/` in the
checkout (PostgreSQL in one folder per major version, so an upgrade never reads an old cluster), keep their
data between runs, and stop when the command ends or on Ctrl-C. While `run` serves, the settings that reach
its servers are kept in `var/local/servers.env` (removed when it stops), so a command in another terminal
(`make etl-run`, `make status`) finds them through `use` without the user copying URLs.

Both servers ask for generated passwords (see kasparro.embedded.postgres and .redis); the URLs handed to
the command carry them, and nothing printed here shows them. The command also gets APP_ENV named
(development for `run`, test for `test`, unless set): FAULT_INJECTION is refused where it is unset.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kasparro.embedded.base import find_pg_bin_dir
from kasparro.embedded.postgres import PostgresServer
from kasparro.embedded.redis import RedisServer

# purpose -> (database setting, broker setting) that, when set, mean "use that server".
SETTINGS = {"run": ("DATABASE_URL", "BROKER_URL"), "test": ("TEST_DATABASE_SERVER", "TEST_BROKER_URL"),
            "bench": ("BENCH_DATABASE_SERVER", "BENCH_BROKER_URL")}
# purpose -> the folder under var/ its servers keep their data in; each purpose has its own, so a bench or the
# suite never touches `make run`'s data, and all three may run at once.
FOLDERS = {"run": "local", "test": "test", "bench": "bench-servers"}
# purpose -> the APP_ENV its command runs under when neither the shell nor .env names one (the bench's
# workers take theirs from the shell, as they always have).
APP_ENV = {"run": "development", "test": "test"}
DATABASE = "kasparro"
# Where `run` leaves the settings of the servers it started, for `use` in other terminals.
SERVERS_FILE = "servers.env"


def pg_major(bin_dir: Path) -> str:
    """Return the major version of the PostgreSQL in `bin_dir` (e.g. "18")."""
    output = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True, text=True,
                            check=True).stdout
    found = re.search(r"(\d+)", output.split(")")[-1])
    return found.group(1) if found else "unknown"


@dataclass
class LocalServices:
    """The servers started for one purpose, and the settings that point the command at them."""

    purpose: str
    root: Path
    postgres: PostgresServer | None = None
    redis: RedisServer | None = None
    exports: dict[str, str] = field(default_factory=dict)

    def start(self, env: Mapping[str, str]) -> list[str]:
        """Start what `env` leaves unconfigured; return one line per server saying what is used."""
        database_setting, broker_setting = SETTINGS[self.purpose]
        lines = []
        if env.get(database_setting):
            lines.append(f"PostgreSQL: {database_setting} is set; using that server")
        else:
            lines.append(self._start_postgres())
        if env.get(broker_setting):
            lines.append(f"Redis: {broker_setting} is set; using that server")
        else:
            lines.append(self._start_redis())
        return lines

    def _start_postgres(self) -> str:
        bin_dir = find_pg_bin_dir()
        # Tests trade durability against a machine crash for speed; `make run` and the bench (which measures
        # what a deployment gets) keep fsync on.
        self.postgres = PostgresServer(self.root / f"pg{pg_major(bin_dir)}", fast=self.purpose == "test")
        self.postgres.start()
        if self.purpose == "run":
            self.exports["DATABASE_URL"] = self.postgres.database_url(DATABASE)
        else:
            # The suite and the bench make throwaway databases: they take the server's URL, without one.
            self.exports[SETTINGS[self.purpose][0]] = self.postgres.database_url("")[:-1]
        return (f"PostgreSQL: started a local server on 127.0.0.1:{self.postgres.port} ({bin_dir}), "
                f"data in {self.postgres.data_dir}")

    def _start_redis(self) -> str:
        self.redis = RedisServer(self.root / "redis", persistent=self.purpose == "run")
        self.redis.start()
        if self.purpose == "run":
            self.exports.update(BROKER_URL=self.redis.database_url(0), RESULT_BACKEND=self.redis.database_url(1),
                                REDIS_URL=self.redis.database_url(0))
        else:
            self.exports[SETTINGS[self.purpose][1]] = self.redis.database_url(0)
        return f"Redis: started a local server on 127.0.0.1:{self.redis.port} ({self.redis.binary}), data in " \
               f"{self.redis.data_dir}"

    def stop(self) -> None:
        """Stop what was started, cleanly, so the data is there next time."""
        for server in (self.redis, self.postgres):
            if server is not None:
                server.stop("fast")


def remember(root: Path, exports: Mapping[str, str]) -> Path:
    """Write the started servers' settings where `use` finds them; readable by this user only."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / SERVERS_FILE
    path.touch(mode=0o600)
    path.write_text("".join(f"{key}={value}\n" for key, value in exports.items()))
    return path


def attached(root: Path, env: Mapping[str, str]) -> dict[str, str]:
    """Return the settings a running `run` left, except those `env` already sets (those win)."""
    path = root / SERVERS_FILE
    if not path.is_file():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key: value for key, value in pairs if not env.get(key)}


def app_env(purpose: str, env: Mapping[str, str]) -> dict[str, str]:
    """Return APP_ENV for the command: the one set (shell or .env), else the purpose's own, if it has one."""
    named = env.get("APP_ENV") or APP_ENV.get(purpose)
    return {"APP_ENV": named} if named else {}


def run_with(command: Sequence[str], exports: Mapping[str, str]) -> int:
    """Run `command` in our process group with `exports` added; wait for it even through Ctrl-C."""
    child = subprocess.Popen(list(command), env={**os.environ, **exports})
    # Ctrl-C reaches the child directly (same process group); a SIGTERM sent to us is passed on.
    signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    while True:
        try:
            return child.wait()
        except KeyboardInterrupt:
            continue


def main(argv: Sequence[str]) -> int:
    """Start what is missing for `argv[0]` (run, test or bench), run the command after `--`, then stop it all.

    `use` starts nothing: it runs the command with the settings a running `run` left, if any.
    """
    if len(argv) < 3 or argv[0] not in (*SETTINGS, "use") or argv[1] != "--":
        print("usage: python -m kasparro.embedded run|test|bench|use -- COMMAND...", file=sys.stderr)
        return 2
    from kasparro.config import PROJECT_ROOT, read_environment

    purpose, command = argv[0], argv[2:]
    local = PROJECT_ROOT / "var" / "local"
    if purpose == "use":
        return run_with(command, attached(local, read_environment()))
    services = LocalServices(purpose, PROJECT_ROOT / "var" / FOLDERS[purpose])
    env = read_environment()
    try:
        for line in services.start(env):
            print(f"kasparro: {line}", flush=True)
        if services.exports and purpose == "run":
            # The path, not the URLs: they hold the servers' passwords, and terminals get logged and shared.
            path = remember(local, services.exports)
            print(f"kasparro: other terminals reach them through `make etl-run` / `make status`; their settings "
                  f"(passwords included) are in {path} while this runs", flush=True)
        return run_with(command, {**services.exports, **app_env(purpose, env)})
    finally:
        if purpose == "run":
            (local / SERVERS_FILE).unlink(missing_ok=True)
        services.stop()
