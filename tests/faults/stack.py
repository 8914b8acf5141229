"""A complete private Kasparro system (PostgreSQL, Redis, workers, CLI) driven only through subprocesses and SQL."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, Row

from kasparro.embedded import PostgresServer, RedisServer
from tests.conftest import PROVIDER_KEYS
from tests.pipeline.helpers import declare

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "kasparro-faults"
DATABASE = "kasparro"
FINAL = ("success", "partial", "failed")


def group_members(pgid: int) -> list[int]:
    """Return the pids still in process group `pgid` (zombies excluded)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # Fields after the parenthesised command: state, ppid, pgrp, ...
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def descendants(pid: int) -> list[int]:
    """Return the pids of every live descendant of `pid`."""
    found: list[int] = []
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return found
    for child in children:
        found += [child, *descendants(child)]
    return found


class Worker:
    """A Celery worker process in its own process group, with its pool children."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path

    @property
    def pid(self) -> int:
        """Return the main process's pid (also its process group id)."""
        return self.process.pid

    def pool_pids(self) -> list[int]:
        """Return the pids of the pool processes (the main process's children)."""
        return descendants(self.pid)

    def log(self) -> str:
        """Return everything the worker has logged so far."""
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole group, main process and pool together, as a lost machine would."""
        self._signal_group(signal.SIGKILL)
        self.process.wait(timeout=10)
        self._wait_group_gone(10)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the group (warm shutdown) and wait; kill it if it outlives `timeout`."""
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
            self._wait_group_gone(timeout)
        except (subprocess.TimeoutExpired, TimeoutError):
            self.kill()

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            pass

    def _wait_group_gone(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while group_members(self.pid):
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {self.name} left {group_members(self.pid)} running")
            time.sleep(0.05)


class Stack:
    """Private servers, a migrated database and helpers to run workers and CLI commands against them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.postgres = PostgresServer(root / "postgres", fast=True)
        self.redis = RedisServer(root / "redis")
        self.sources_file = root / "sources.toml"
        self.workers: list[Worker] = []
        self._engine: Engine | None = None
        self._control: Celery | None = None

    @property
    def database_url(self) -> str:
        """Return the URL of the private Kasparro database."""
        return self.postgres.database_url(DATABASE)

    @property
    def engine(self) -> Engine:
        """Return a plain SQLAlchemy engine on the private database (pings, so it survives restarts)."""
        if self._engine is None:
            self._engine = create_engine(self.database_url, pool_pre_ping=True)
        return self._engine

    def start(self) -> None:
        """Start both servers and build the schema with `etl init-db`, as a deployment does."""
        self.postgres.start()
        self.redis.start()
        self.sources_file.write_text("")
        done = self.etl("init-db")
        if done.returncode != 0:
            raise RuntimeError(f"etl init-db failed:\n{done.stdout}\n{done.stderr}")

    def env(self, **overrides: str) -> dict[str, str]:
        """Return the environment every process of this stack runs with, plus `overrides`."""
        # Never a developer's real provider keys, never the shared servers' settings.
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        env.update(ENV_FILE="", DATABASE_URL=self.database_url, BROKER_URL=self.redis.url,
                   RESULT_BACKEND=self.redis.url, REDIS_URL=self.redis.url, TASK_QUEUE=QUEUE,
                   SOURCES_FILE=str(self.sources_file), ENABLED_SOURCES="", OFFLINE="false", LEASE_SECONDS="30",
                   BATCH_SIZE="500", TASK_MAX_RETRIES="3", TASK_BACKOFF_BASE_SECONDS="0.25",
                   RATE_LIMIT_WINDOW_SECONDS="1", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", **PROVIDER_KEYS,
                   # Named, not defaulted: FAULT_INJECTION is refused unless APP_ENV says development or test.
                   APP_ENV="test")
        env.update(overrides)
        return env

    def write_sources(self, specs: dict[str, dict[str, Any]]) -> None:
        """Declare `specs` (see tests.pipeline.helpers.csv_spec) as the stack's sources.toml."""
        declare(self.sources_file, specs)

    def etl(self, *args: str, timeout: float = 180, **env: str) -> subprocess.CompletedProcess[str]:
        """Run `flask --app wsgi etl <args>` against the stack and return its result."""
        command = [sys.executable, "-m", "flask", "--app", "wsgi", "etl", *args]
        return subprocess.run(command, env=self.env(**env), cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def queue_run(self, *sources: str) -> int:
        """Queue a run with `etl run` (of `sources`, else all) and return its id."""
        done = self.etl("run", *(arg for source in sources for arg in ("--source", source)))
        found = re.search(r"^run (\d+) queued", done.stdout, re.M)
        if done.returncode != 0 or not found:
            raise RuntimeError(f"etl run failed:\n{done.stdout}\n{done.stderr}")
        return int(found.group(1))

    def sql(self, query: str, **params: Any) -> Sequence[Row[Any]]:
        """Run one statement in its own transaction and return its rows (empty when it returns none)."""
        with self.engine.begin() as conn:
            result = conn.execute(text(query), params)
            return result.fetchall() if result.returns_rows else []

    def wait_for_run(self, run_id: int, timeout: float = 60) -> str:
        """Poll the runs table until the run reaches a final status, and return that status."""
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            rows = self.sql("SELECT status FROM runs WHERE id = :id", id=run_id)
            status = rows[0].status if rows else None
            if status in FINAL:
                return str(status)
            time.sleep(0.2)
        raise AssertionError(f"run {run_id} still {status} after {timeout}s")

    def start_worker(self, concurrency: int = 2, timeout: float = 60, **env: str) -> Worker:
        """Start a worker on the stack's queue and wait until it answers a ping."""
        name = f"faults-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
        log_path = self.root / f"worker-{name.split('@')[0]}.log"
        command = [sys.executable, "-m", "celery", "-A", "kasparro.worker", "worker", "--loglevel=INFO",
                   "-Q", QUEUE, "-c", str(concurrency), "-n", name, "--without-gossip", "--without-mingle"]
        with open(log_path, "wb") as out:
            # Its own group, so kill() reaches the pool children and no signal of ours reaches it by accident.
            process = subprocess.Popen(command, env=self.env(**env), cwd=ROOT, stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        worker = Worker(name, process, log_path)
        self.workers.append(worker)
        deadline = time.monotonic() + timeout
        while not self.ping(worker):
            if process.poll() is not None or time.monotonic() > deadline:
                worker.kill()
                raise RuntimeError(f"worker {name} did not start:\n{worker.log()[-4000:]}")
        return worker

    def ping(self, worker: Worker, timeout: float = 0.5) -> bool:
        """Say whether `worker` answers a control ping through the private broker."""
        control = self._control_app()
        # A fresh connection each time: a pooled one would be stale after a Redis restart.
        with control.connection_for_write() as connection:
            try:
                replies = control.control.ping(destination=[worker.name], timeout=timeout,
                                                     connection=connection)
            except (OSError, OperationalError, RedisError):
                time.sleep(timeout)
                return False
        return any(worker.name in reply for reply in replies)

    def consume(self, worker: Worker, on: bool, timeout: float = 60) -> None:
        """Make `worker` take messages from the queue again, or stop taking them (what it holds still runs)."""
        control = self._control_app()
        change = control.control.add_consumer if on else control.control.cancel_consumer
        deadline = time.monotonic() + timeout
        # Asked again until it answers: after a Redis restart the worker takes a moment to reconnect.
        while True:
            with control.connection_for_write() as connection:
                try:
                    replies = change(QUEUE, destination=[worker.name], reply=True, timeout=1, connection=connection)
                except (OSError, OperationalError, RedisError):
                    replies = []
            if any(worker.name in reply for reply in replies):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {worker.name} did not answer:\n{worker.log()[-3000:]}")

    def holds(self, worker: Worker) -> list[dict[str, Any]]:
        """Return the tasks `worker` is running or holds to run later (started, reserved or scheduled)."""
        control = self._control_app()
        with control.connection_for_write() as connection:
            inspect = control.control.inspect(destination=[worker.name], timeout=1, connection=connection)
            replies = [inspect.active(), inspect.reserved(), inspect.scheduled()]
        assert all(reply and worker.name in reply for reply in replies), replies
        return [task for reply in replies for task in reply[worker.name]]

    def _control_app(self) -> Celery:
        if self._control is None:
            # Our own app, never set as current, so the main session's default Celery app is untouched.
            self._control = Celery("kasparro-faults", broker=self.redis.url, set_as_current=False)
        return self._control

    def close(self) -> list[str]:
        """Kill workers, stop servers, remove the directory; return what was still running afterwards."""
        leftovers = []
        for worker in self.workers:
            try:
                worker.kill()
            except TimeoutError as exc:
                leftovers.append(str(exc))
        if self._engine is not None:
            self._engine.dispose()
        if self._control is not None:
            self._control.close()
        backends = descendants(self.postgres.pid) if self.postgres.pid else []
        redis_pid, postgres_pid = self.redis.pid, self.postgres.pid
        self.redis.stop("immediate")
        self.postgres.stop("immediate")
        # An immediate stop returns once the postmaster is gone; its backends may take a moment more.
        deadline = time.monotonic() + 10
        while (alive := [pid for pid in (redis_pid, postgres_pid, *backends)
                         if pid and Path(f"/proc/{pid}").exists() and not _is_zombie(pid)]) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        leftovers += [f"pid {pid}" for pid in alive]
        shutil.rmtree(self.root, ignore_errors=True)
        return leftovers


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def make_root() -> Path:
    """Create a stack directory the postgres account can enter when we run as root."""
    root = Path(tempfile.mkdtemp(prefix="kasparro-stack-"))
    # mkdtemp makes it 0700; the cluster below it runs as `postgres` under root.
    root.chmod(0o711)
    return root
