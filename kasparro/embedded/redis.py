"""A private Redis run as our child process; it keeps its data in an append-only file only if asked.

It asks every client for a generated password (`requirepass`), kept in its data dir (mode 700) in a file
readable by us only, and handed to Redis in a config file there: never on the command line, which every
local user can read in `ps`.
"""
from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
import weakref
from pathlib import Path

from kasparro.embedded.base import (
    START_TIMEOUT,
    EmbeddedError,
    Server,
    StopMode,
    find_redis_server,
    log_size,
    log_tail,
    read_or_make_password,
)

PASSWORD_FILE = "password"
CONFIG_FILE = "redis.conf"


def _emergency_kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


class RedisServer(Server):
    """A private Redis on 127.0.0.1 run as our child process (`persistent`: queued messages survive a restart)."""

    def __init__(self, data_dir: Path, port: int | None = None, *, persistent: bool = False) -> None:
        super().__init__(data_dir, port)
        self.persistent = persistent
        self.binary = find_redis_server()
        self._process: subprocess.Popen[bytes] | None = None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self.password = read_or_make_password(self.data_dir / PASSWORD_FILE)

    @property
    def url(self) -> str:
        """Return the URL of database 0."""
        return self.database_url(0)

    def database_url(self, database: int) -> str:
        """Return the URL of numbered database `database`, password included."""
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{database}"

    @property
    def pid(self) -> int | None:
        """Return the server's pid while it runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def log_path(self) -> Path:
        """Return the server's log file."""
        return self.data_dir / "redis.log"

    def _write_config(self) -> Path:
        path = self.data_dir / CONFIG_FILE
        path.touch(mode=0o600)
        path.write_text(f"requirepass {self.password}\n")
        return path

    def _spawn(self) -> subprocess.Popen[bytes]:
        command = [str(self.binary), str(self._write_config()), "--port", str(self.port), "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "yes" if self.persistent else "no", "--dir", str(self.data_dir),
                   "--daemonize", "no", "--logfile", str(self.log_path)]
        # Own session: a Ctrl-C meant for the caller's terminal must not kill the server behind its back.
        return subprocess.Popen(command, cwd=self.data_dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)

    def _serving_pid(self) -> int | None:
        # The pid, not just a PONG: a Redis already on an explicit port must not pass for ours.
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"AUTH " + self.password.encode() + b"\r\nINFO server\r\n")
                reply = b""
                while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        return None
                    reply += chunk
        except OSError:
            return None
        found = re.search(rb"process_id:(\d+)", reply)
        return int(found.group(1)) if found else None

    def _ready(self, process: subprocess.Popen[bytes], since: int) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while self._serving_pid() != process.pid:
            if process.poll() is not None:
                self._next_port(log_tail(self.log_path, since), "Redis")
                return False
            if time.monotonic() > deadline:
                _emergency_kill(process)
                raise EmbeddedError(f"Redis did not answer on {self.port}:\n{log_tail(self.log_path)}")
            time.sleep(0.02)
        self._process = process
        return True

    def start(self) -> None:
        """Start the server and wait until it answers."""
        if self.running:
            return
        for _ in range(3):
            since = log_size(self.log_path)
            if self._ready(self._spawn(), since):
                break
        else:
            raise EmbeddedError(f"Redis found no free port:\n{log_tail(self.log_path)}")
        assert self._process is not None
        self._started(weakref.finalize(self, _emergency_kill, self._process))

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server: "fast" sends SIGTERM, "immediate" SIGKILL (a crash; nothing persists either way)."""
        self._disarm()
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM if mode == "fast" else signal.SIGKILL)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
