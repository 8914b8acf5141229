"""A private PostgreSQL cluster run through pg_ctl; when we are root, as the `postgres` account if there is
one, else in a user namespace (`unshare`) where we are an ordinary user, since PostgreSQL refuses root.

Every connection needs the superuser's password (scram-sha-256, on TCP and on the socket alike): the
server listens on 127.0.0.1, where any local user could otherwise become superuser and run programs
through `COPY ... TO PROGRAM`. The password is generated once and kept beside the data dir, readable by
us only. A cluster made before that (trust auth) is secured on its next start, before it listens:
the password is set in single-user mode and pg_hba.conf rewritten.
"""
from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import socket
import stat
import subprocess
import time
import weakref
from pathlib import Path
from typing import Any

from kasparro.embedded.base import (
    START_TIMEOUT,
    EmbeddedError,
    Server,
    StopMode,
    find_pg_bin_dir,
    log_size,
    log_tail,
    read_or_make_password,
)

# postgresql.conf includes this file, rewritten before every start, so settings need no shell quoting.
SETTINGS_FILE = "embedded.conf"
# pg_hba.conf starts with this and a digest of the password it was written for: a cluster without it (made
# with trust auth by an older version), or with another digest (the password file was lost), is secured again.
HBA_MARK = "# kasparro.embedded: scram-sha-256 for every connection, password sha256:"
HBA_RULES = "local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n"
# sun_path holds 108 bytes; a deeper data dir gets TCP only, since one socket too long is fatal.
MAX_SOCKET_PATH = 100


def _accepts_tcp(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_reachable(path: Path, account: pwd.struct_passwd) -> None:
    # PostgreSQL refuses root, so its data must sit below directories the postgres account can enter.
    groups = {account.pw_gid} | set(os.getgrouplist(account.pw_name, account.pw_gid))
    for parent in path.parents:
        if not parent.exists():
            continue  # made later by us, with the usual world-traversable mode
        info = parent.stat()
        if info.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif info.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            raise EmbeddedError(f"user {account.pw_name} cannot enter {parent}, so it cannot run PostgreSQL with "
                                f"{path}: keep it below world-traversable directories (chmod o+x)")


# Inside this namespace we are uid 1000, outside still root: files stay ours and PostgreSQL is content.
UNSHARE = ("unshare", "--user", "--map-user=1000", "--map-group=1000", "--")


def _emergency_pg_stop(command: list[str], owner: dict[str, Any]) -> None:
    subprocess.run(command, cwd="/", capture_output=True, timeout=30, check=False, **owner)


def _account(os_user: str | None, data_dir: Path,
             bin_dir: Path) -> tuple[pwd.struct_passwd | None, tuple[str, ...]]:
    """Decide how to run the server tools: as ourselves, as `os_user`, or under unshare.

    As root, the `os_user` account is used when it exists and can reach both the data dir and the
    binaries (a checkout in a `mktemp -d` folder, mode 700, holds the venv's binaries out of its
    reach); otherwise a user namespace, which needs neither an account nor any change of ownership
    or permissions.
    """
    if os.geteuid() != 0:
        return None, ()
    try:
        account = pwd.getpwnam(os_user or "")
        if shutil.which("unshare") is None:
            return account, ()
        _check_reachable(data_dir, account)
        _check_reachable(bin_dir / "postgres", account)
        return account, ()
    except (KeyError, EmbeddedError) as exc:
        if shutil.which("unshare") is None:
            raise EmbeddedError(f"PostgreSQL refuses to run as root, and neither the {os_user!r} account "
                                f"({exc}) nor `unshare` (util-linux) can run it") from None
        return None, UNSHARE


# For the server `make run` and the bench start (not the tests'): PostgreSQL's defaults are sized for any
# machine at all. With 128 MB of shared buffers, a 1M-row load evicts its own index pages, and with 1 GB of
# WAL between checkpoints it checkpoints mid-load, after which every page it touches is written to the WAL
# whole again. Measured end to end (2026-12-07, 1M rows, 2 cores): first load 10.1-12.6 s with the defaults,
# 9.4-9.6 s with these. docker-compose.yml gives its PostgreSQL the same.
LOAD_SETTINGS = {"max_wal_size": "'4GB'", "checkpoint_timeout": "'15min'"}
SHARED_BUFFERS_MB = (128, 1024)  # at least PostgreSQL's default, at most 1 GB: an eighth of the memory between


def shared_buffers(memory_bytes: int | None = None) -> str:
    """Return shared_buffers for a local server: an eighth of the machine's memory, within SHARED_BUFFERS_MB."""
    if memory_bytes is None:
        try:
            memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # not on this platform: PostgreSQL's default
            memory_bytes = 0
    low, high = SHARED_BUFFERS_MB
    return f"'{min(max(memory_bytes // 8 // 2**20, low), high)}MB'"


def password_digest(password: str) -> str:
    """Return the short digest pg_hba.conf's first line keeps, to tell which password the cluster has."""
    return hashlib.sha256(password.encode()).hexdigest()[:16]


class PostgresServer(Server):
    """A private PostgreSQL cluster in `data_dir` with a generated password, listening on 127.0.0.1 only."""

    def __init__(self, data_dir: Path, port: int | None = None, *, fast: bool = False,
                 os_user: str = "postgres") -> None:
        super().__init__(data_dir, port)
        # fsync off trades durability against a machine crash (not a server crash) for speed: tests only.
        self.fast = fast
        self.bin_dir = find_pg_bin_dir()
        self._account, self._prefix = _account(os_user, self.data_dir, self.bin_dir)
        # Beside the data dir, not in it: initdb wants an empty directory, and we need the password first.
        self.password_file = self.data_dir.with_name(self.data_dir.name + ".password")
        self.password = read_or_make_password(self.password_file)

    @property
    def url(self) -> str:
        """Return the SQLAlchemy URL of the `postgres` database."""
        return self.database_url("postgres")

    def database_url(self, database: str) -> str:
        """Return the SQLAlchemy URL of `database` on this server, password included."""
        return f"postgresql+psycopg2://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    @property
    def initialized(self) -> bool:
        """Say whether initdb has run in the data dir."""
        return (self.data_dir / "PG_VERSION").is_file()

    @property
    def pid(self) -> int | None:
        """Return the postmaster's pid while it runs."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    @property
    def log_path(self) -> Path:
        """Return the server's log file."""
        return self.data_dir / "server.log"

    def _owner(self) -> dict[str, Any]:
        if self._account is None:
            return {}
        return {"user": self._account.pw_uid, "group": self._account.pw_gid, "extra_groups": []}

    def _tool(self, name: str, *args: str, timeout: float = START_TIMEOUT,
              stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        # cwd "/" because the postgres account may not be allowed into our working directory.
        # A session of its own: pg_ctl leaves the server running, and a Ctrl-C meant for the terminal's
        # foreground job must not shut it down under the processes still using it.
        return subprocess.run([*self._prefix, str(self.bin_dir / name), *args], cwd="/", capture_output=True,
                              text=True, timeout=timeout, check=False, start_new_session=True, input=stdin,
                              **self._owner())

    def _give(self, path: Path) -> None:
        if self._account is not None:
            os.chown(path, self._account.pw_uid, self._account.pw_gid)

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._account is not None:
            _check_reachable(self.data_dir, self._account)
        self._give(self.data_dir)
        self.data_dir.chmod(0o700)
        # reject until _secure() sets the password: a cluster left half made admits nobody.
        done = self._tool("initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=reject",
                          "--encoding=UTF8", "--locale=C", "--no-instructions",
                          *(["--no-sync"] if self.fast else []))
        if done.returncode != 0:
            raise EmbeddedError(f"initdb failed in {self.data_dir}:\n{done.stdout}{done.stderr}")
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(f"\ninclude_if_exists = '{SETTINGS_FILE}'\n")

    @property
    def secured(self) -> bool:
        """Say whether pg_hba.conf asks every connection for the password we hold."""
        try:
            first = (self.data_dir / "pg_hba.conf").read_text().split("\n", 1)[0]
        except OSError:
            return False
        return first == HBA_MARK + password_digest(self.password)

    def _secure(self) -> None:
        # Single-user mode: the password is set with no server listening, so a trust cluster is never open
        # to anyone while it is converted. It comes on stdin, never on a command line other users can read.
        done = self._tool("postgres", "--single", "-D", str(self.data_dir), "-c", "exit_on_error=on", "postgres",
                          stdin=f"ALTER ROLE postgres PASSWORD '{self.password}';\n")
        if done.returncode != 0 or "ERROR" in done.stderr:
            raise EmbeddedError(f"could not set the password of PostgreSQL in {self.data_dir}:\n{done.stderr}")
        path = self.data_dir / "pg_hba.conf"
        path.write_text(f"{HBA_MARK}{password_digest(self.password)}\n{HBA_RULES}")
        path.chmod(0o600)
        self._give(path)

    def _write_settings(self) -> None:
        sockets = str(self.data_dir) if len(f"{self.data_dir}/.s.PGSQL.{self.port}") <= MAX_SOCKET_PATH else ""
        settings = {"port": str(self.port), "listen_addresses": "'127.0.0.1'",
                    "unix_socket_directories": f"'{sockets}'", "password_encryption": "'scram-sha-256'"}
        if self.fast:
            settings.update(fsync="off", full_page_writes="off")
        else:
            settings.update(LOAD_SETTINGS)
            settings["shared_buffers"] = shared_buffers()
        path = self.data_dir / SETTINGS_FILE
        path.write_text("".join(f"{key} = {value}\n" for key, value in settings.items()))
        self._give(path)

    def _pg_ctl_start(self) -> bool:
        self._write_settings()
        if not self.secured:
            self._secure()
        since = log_size(self.log_path)
        done = self._tool("pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self.log_path),
                          "-w", "-t", str(int(START_TIMEOUT)), timeout=START_TIMEOUT + 10)
        if done.returncode != 0:
            self._next_port(f"{done.stderr}\n{log_tail(self.log_path, since)}", "PostgreSQL")
        return done.returncode == 0

    def _adopt_port(self) -> None:
        # A server left running by an earlier owner (killed before it could stop it) keeps its port:
        # the fourth line of postmaster.pid.
        lines = (self.data_dir / "postmaster.pid").read_text().split("\n")
        self.port = int(lines[3])
        self._auto_port = False

    def start(self) -> None:
        """Initialise the cluster on first use, secure it, start it and wait until it accepts TCP connections."""
        if self.running:
            self._adopt_port()
            return
        if not self.initialized:
            self._initdb()
        if not any(self._pg_ctl_start() for _ in range(3)):
            raise EmbeddedError(f"PostgreSQL found no free port:\n{log_tail(self.log_path)}")
        deadline = time.monotonic() + START_TIMEOUT
        while not _accepts_tcp(self.port):
            if time.monotonic() > deadline:
                raise EmbeddedError(f"PostgreSQL is not accepting connections on {self.port}")
            time.sleep(0.05)
        stop = [*self._prefix, str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "immediate", "-w"]
        self._started(weakref.finalize(self, _emergency_pg_stop, stop, self._owner()))

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server: "fast" shuts down cleanly, "immediate" aborts like a crash (recovery on next start)."""
        self._disarm()
        if not self.running:
            return
        done = self._tool("pg_ctl", "stop", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", timeout=90)
        if done.returncode != 0 and self.running:
            raise EmbeddedError(f"PostgreSQL did not stop ({mode}):\n{done.stderr}\n{log_tail(self.log_path)}")
