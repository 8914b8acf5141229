"""Start a real Celery worker for the bench and sample its memory."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def descendants(pid: int) -> list[int]:
    """Return `pid` and every process below it (via /proc/<pid>/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{current}/task/{tid}/children") as handle:
                    todo += [int(c) for c in handle.read().split()]
            except OSError:
                pass
    return found


def rss_kib(pid: int) -> int:
    """Resident set size of one process in KiB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# The server's own helpers work for every database; backends of other databases are someone else's.
SHARED_POSTGRES = ("checkpointer", "background writer", "walwriter")


def postgres_pids(database: str | None = None) -> list[int]:
    """Local postgres processes: all, or the backends of `database` plus the server's shared helpers."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as handle:
                    if handle.read().strip() != "postgres":
                        continue
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    title = handle.read().decode(errors="replace")
            except OSError:
                continue
            if database is None or f" {database} " in title or title.rstrip(" \x00").endswith(SHARED_POSTGRES):
                found.append(int(entry))
    return found


class ProcSampler(threading.Thread):
    """Sample a worker's process tree (RSS, CPU) and local PostgreSQL's CPU every `interval` seconds.

    With `database`, PostgreSQL CPU counts only that database's backends and the
    server's shared helpers (WAL writer, checkpointer), so other users of a
    shared server do not inflate it.

    Peaks and CPU are kept since the last `reset()`. CPU is tracked per pid, so a
    backend that exits mid-run keeps its last sample.
    """

    def __init__(self, pid: int | list[int], database: str | None = None, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        # Several pids: several worker processes started apart (bench --nodes), sampled as one tree.
        self.pids, self.database, self.interval = pid if isinstance(pid, list) else [pid], database, interval
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self.peak_total = self.peak_process = 0
        self._cpu: dict[str, dict[int, float]] = {"worker": {}, "postgres": {}}
        self._base: dict[str, dict[int, float]] = {"worker": {}, "postgres": {}}

    def sample(self) -> tuple[int, int]:
        """Return (RSS of the whole tree, RSS of its biggest process) in KiB, now."""
        sizes = [rss_kib(p) for p in self._tree()]
        return sum(sizes), max(sizes, default=0)

    def _tree(self) -> list[int]:
        return [p for pid in self.pids for p in descendants(pid)]

    def _tick(self) -> None:
        tree = self._tree()
        sizes = [rss_kib(p) for p in tree]
        cpu = {"worker": {p: cpu_seconds(p) for p in tree}, "postgres": {p: cpu_seconds(p) for p in postgres_pids(self.database)}}
        with self._lock:
            self.peak_total = max(self.peak_total, sum(sizes))
            self.peak_process = max(self.peak_process, max(sizes, default=0))
            for group, values in cpu.items():
                self._cpu[group].update({p: v for p, v in values.items() if v is not None})

    def run(self) -> None:
        while not self._stop_event.is_set():
            self._tick()
            self._stop_event.wait(self.interval)

    def reset(self) -> dict[str, float]:
        """Return peaks (KiB) and CPU seconds since the last reset, and start over."""
        self._tick()
        with self._lock:
            used = {group: sum(v - self._base[group].get(p, 0.0) for p, v in values.items())
                    for group, values in self._cpu.items()}
            result = {"peak_total": self.peak_total, "peak_process": self.peak_process,
                      "cpu_worker": used["worker"], "cpu_postgres": used["postgres"]}
            self.peak_total = self.peak_process = 0
            self._base = {group: dict(values) for group, values in self._cpu.items()}
        return result

    def stop(self) -> None:
        self._stop_event.set()


def start_worker(env_overrides: dict[str, str], queue: str, node: str, concurrency: int, log: Path,
                 ping: Any, timeout: float = 60) -> subprocess.Popen:
    """Start `celery -A kasparro.worker worker` on `queue`; wait until it answers a ping."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(ENV_FILE="", PYTHONPATH=str(ROOT), **env_overrides)
    command = [sys.executable, "-m", "celery", "-A", "kasparro.worker", "worker", "--loglevel=INFO",
               "-Q", queue, "-c", str(concurrency), "-n", node, "--without-gossip", "--without-mingle"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                   start_new_session=True)
    deadline = time.monotonic() + timeout
    while not ping(destination=[node], timeout=0.5):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_worker(process)
            raise RuntimeError(f"worker did not start:\n{log.read_text()[-4000:]}")
    return process


def stop_worker(process: subprocess.Popen) -> None:
    """Stop the worker's whole process group (it runs in a session of its own)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass
