"""Start the whole stack of `make run` (API, worker, beat, Flower, fake upstream) for the end-to-end bench.

It runs what `make serve` runs: `python -m kasparro.withenv python -m kasparro.procfile -f <Procfile>`, with
the project's own Procfile copied and three of its settings made private (the beat schedule file, the
worker's node name and its pool size), so a bench beside a developer's `make run` shares no file and no name.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import descendants
from kasparro.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
# What the bench changes in the Procfile, as (text in the Procfile, replacement); each must be found, so a
# Procfile that changed shape stops the bench instead of silently running something else.
SCHEDULE = "--schedule var/celerybeat-schedule"
NODE = "--hostname=worker@%h"
CONCURRENCY = "--concurrency=2"


@dataclass
class Stack:
    """The processes of one bench scenario: where they listen, their settings, and the manager's process."""

    workdir: Path
    tag: str
    workers: int
    settings: Mapping[str, str]  # DATABASE_URL, BROKER_URL, SOURCES_FILE, TASK_QUEUE, ...
    api_key: str = field(default_factory=lambda: secrets.token_hex(24))
    ports: dict[str, int] = field(default_factory=lambda: distinct_ports(("api", "flower", "upstream")))
    process: subprocess.Popen | None = None
    _seen: set[int] = field(default_factory=set)

    @property
    def api(self) -> str:
        """The API's base URL."""
        return f"http://127.0.0.1:{self.ports['api']}"

    @property
    def node(self) -> str:
        """The worker's Celery node name (the Procfile's `worker@%h`, made private)."""
        return f"bench-{self.tag}@{os.uname().nodename}"

    @property
    def log(self) -> Path:
        return self.workdir / "stack.log"

    def procfile(self) -> Path:
        """Write the project's Procfile with the private schedule file, node name and pool size."""
        text = (ROOT / "Procfile").read_text()
        swaps = [(SCHEDULE, f"--schedule {self.workdir / 'celerybeat-schedule'}"),
                 (NODE, f"--hostname=bench-{self.tag}@%h"), (CONCURRENCY, f"--concurrency={self.workers}")]
        for old, new in swaps:
            if old not in text:
                raise RuntimeError(f"Procfile no longer holds {old!r}; update bench/stack.py")
            text = text.replace(old, new)
        path = self.workdir / "Procfile"
        path.write_text(text)
        return path

    def environment(self) -> dict[str, str]:
        """The shell `make serve` would have: the venv on PATH, the bench's settings and ports, no .env."""
        # Provider keys of the developer's shell have no business in a bench of a CSV source.
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        upstream = f"http://127.0.0.1:{self.ports['upstream']}"
        env.update(
            ENV_FILE="", PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}", PYTHONPATH=str(ROOT),
            API_KEY=self.api_key, GUNICORN_BIND=f"127.0.0.1:{self.ports['api']}",
            FLOWER_PORT=str(self.ports["flower"]), FLOWER_BASIC_AUTH=f"bench:{secrets.token_hex(12)}",
            FAKE_UPSTREAM_PORT=str(self.ports["upstream"]), FAKE_UPSTREAM_URL=upstream, OFFLINE="1",
            # `make run` runs every enabled source once when beat starts, and again every interval. Here the
            # bench sources are the only ones declared, and the bench triggers them itself: a run of beat's
            # would load the file before the measured first load, or beside a measured run. So the first run
            # on start is off and the interval is a year; the reaper's schedule stays as in `make run`.
            ETL_RUN_ON_START="false", ETL_INTERVAL_SECONDS=str(365 * 24 * 3600),
            APP_ENV=env.get("APP_ENV") or "development", LOG_FORMAT="console", LOG_LEVEL="INFO",
        )
        env.update(self.settings)
        return env

    def start(self) -> None:
        """Start the Procfile's processes as `make serve` does, in a session of their own."""
        command = [sys.executable, "-m", "kasparro.withenv", sys.executable, "-m", "kasparro.procfile",
                   "-f", str(self.procfile())]
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(command, env=self.environment(), cwd=ROOT, stdout=out,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)

    def start_ready(self, ping: Callable[..., list], attempts: int = 3) -> float:
        """Start the stack and wait until it is ready; on fresh ports again if one was taken meanwhile.

        A free port is only free when it is chosen: on a busy machine another process (or an outgoing
        connection) can take it before gunicorn, Flower or the fake upstream binds it.
        """
        for attempt in range(1, attempts + 1):
            self.start()
            try:
                return self.wait_ready(ping)
            except PortTaken:
                self.stop()
                if attempt == attempts:
                    raise
                print(f"a port was taken before the stack bound it; again on new ports ({self.tail(600)})",
                      flush=True)
                self.ports = distinct_ports(tuple(self.ports))
        raise AssertionError("unreachable")

    def wait_ready(self, ping: Callable[..., list], timeout: float = 180) -> float:
        """Wait until /health says ok and this stack's own worker answers a ping; return the seconds waited.

        /health pings every worker on the broker, so another bench's worker on the same Redis database could
        answer for ours: the ping by node name makes sure the measured runs do not wait for our worker to start.
        """
        started = time.monotonic()
        deadline = started + timeout
        status = "no answer"
        while time.monotonic() < deadline:
            self._check_alive()
            status = self.health()
            if status == "ok" and ping(destination=[self.node], timeout=0.5):
                return time.monotonic() - started
            time.sleep(0.5)
        raise RuntimeError(f"the stack was not ready in {timeout:.0f}s (/health: {status})\n{self.tail()}")

    def health(self) -> str:
        """Return /health's status (ok, degraded, down), or what went wrong asking."""
        try:
            with urllib.request.urlopen(f"{self.api}/health", timeout=5) as response:
                report = json.load(response)["data"]
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except OSError as exc:
            return type(exc).__name__
        return report["status"] if report["status"] == "ok" else f"{report['status']}: {report['failing']}"

    def _check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            kind = PortTaken if "Address already in use" in log else RuntimeError
            raise kind(f"the stack's processes stopped\n{self.tail()}")
        # Remember every process below the manager while it runs, to make sure none outlives the bench.
        self._seen.update(descendants(self.process.pid))

    def tail(self, size: int = 4000) -> str:
        """The end of the processes' combined output."""
        return f"--- stack log tail ({self.log}) ---\n" + (
            self.log.read_text(errors="replace")[-size:] if self.log.exists() else "(none)")

    def stop(self) -> None:
        """Stop every process: SIGTERM to the manager (it stops the others), then SIGKILL to any left over.

        honcho starts each Procfile process in a session of its own, so the manager's process group does not
        hold them; the ones left are found among the processes seen below the manager.
        """
        if self.process is None:
            return
        if self.process.poll() is None:
            self._seen.update(descendants(self.process.pid))
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        for pid in self._seen - {self.process.pid}:
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.process = None


class PortTaken(RuntimeError):
    """A process of the stack could not bind its port: someone took it after we chose it."""


def distinct_ports(names: tuple[str, ...]) -> dict[str, int]:
    """A free port per name, no two the same (the kernel may hand out a just-closed port again)."""
    ports: dict[str, int] = {}
    while len(ports) < len(names):
        port = free_port()
        if port not in ports.values():
            ports[names[len(ports)]] = port
    return ports


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass
