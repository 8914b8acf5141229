"""A newcomer's machine for the `make` targets: a fresh copy of the project, nothing configured, free ports.

Used by the tests that run `make run`, `make demo-recovery` and `make bench` as a user would, so none of them
leans on the test session's servers, settings or `var/`.
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
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
# Settings a newcomer would not have: none of the URLs, and not the test session's.
UNSET = ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND", "REDIS_URL", "TEST_DATABASE_SERVER", "TEST_BROKER_URL",
         "BENCH_DATABASE_SERVER", "BENCH_BROKER_URL", "ENV_FILE", "TASK_QUEUE", "SOURCES_FILE", "PG_BIN_DIR",
         "REDIS_SERVER", "API_KEY", "APP_ENV", "FAULT_INJECTION",
         # Under `make test` these say "a sub-make": the newcomer's `make run` would print make[1]'s
         # directory lines, which a shell's top-level make does not.
         "MAKELEVEL", "MAKEFLAGS", "MFLAGS")


def copy_checkout(target: Path) -> Path:
    """Copy the project's files (what a clone holds) to `target`, sharing this run's virtualenv."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    (target / ".venv").symlink_to(Path(sys.prefix))
    return target


def newcomer_env(ports: dict[str, int], **settings: str) -> dict[str, str]:
    """The environment of a shell with nothing configured, on free ports (another stack may run here)."""
    env = {k: v for k, v in os.environ.items() if k not in UNSET and not k.endswith("_API_KEY")}
    env.update(GUNICORN_BIND=f"127.0.0.1:{ports['api']}", FLOWER_PORT=str(ports["flower"]),
               FAKE_UPSTREAM_PORT=str(ports["upstream"]), FAKE_UPSTREAM_URL=f"http://127.0.0.1:{ports['upstream']}",
               # Nothing of the machine's own: no system PostgreSQL tools on PATH.
               PATH=":".join(p for p in env["PATH"].split(":") if "postgresql" not in p), **settings)
    return env


def start(checkout: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start `make run` in `checkout` as its own process group, its output appended to `log`."""
    with log.open("ab") as out:
        # SIGINT at its default, as in a terminal: a suite started in the background by a non-interactive
        # shell (CI) inherits it ignored, and make would then outlive the Ctrl-C it is sent.
        return subprocess.Popen(["make", "run"], cwd=checkout, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_default_sigint)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


# A first run on a loaded 2-core machine (CI beside a benchmark) has taken over 4 minutes; unloaded, under one.
FIRST_RUN_SECONDS = 480


def wait_until(process: subprocess.Popen[bytes], log: Path, look: Callable[[], T | None],
               what: str | Callable[[], str], timeout: float = FIRST_RUN_SECONDS) -> T:
    """Call `look` every second until it returns something; fail early if `make run` exits, or at `timeout`.

    `look` may raise OSError (nothing listens yet, a 5xx): that counts as not yet. `what` says what went
    wrong, or is called at the timeout to say it (what the system shows then).
    """
    deadline, last = time.monotonic() + timeout, "nothing"
    while time.monotonic() < deadline:
        assert process.poll() is None, f"make run exited:\n{log.read_text()[-4000:]}"
        try:
            found = look()
            if found is not None:
                return found
        except OSError as exc:
            last = repr(exc)
        time.sleep(1)
    told = what() if callable(what) else what
    raise AssertionError(f"{told} in {timeout:.0f}s (last error: {last}):\n{log.read_text()[-4000:]}")


def wait_for_quotes(api: str, process: subprocess.Popen[bytes], log: Path) -> list[dict]:
    """Wait until the API serves quotes."""
    return wait_until(process, log, lambda: get(f"{api}/data?limit=5")["data"] or None, "/data stayed empty")


def wait_for_api(api: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until the API answers /health at all (200 or 503)."""
    wait_until(process, log, lambda: _health_answers(api), "the API never answered")


def _health_answers(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=5):
            return True
    except urllib.error.HTTPError:
        return True  # 503: it answers, and says what is not ready yet


def wait_for_first_run(api: str, process: subprocess.Popen[bytes], log: Path) -> dict:
    """Wait until the first run has finished (polling GET /runs also puts access lines in the log)."""

    def finished() -> dict | None:
        runs = get(f"{api}/runs?limit=1")["data"]
        return runs[0] if runs and runs[0]["status"] in ("success", "partial", "failed") else None

    def state() -> str:
        try:
            return f"no run finished; GET /runs?limit=1 says {get(f'{api}/runs?limit=1')['data']}"
        except OSError as exc:
            return f"no run finished; GET /runs failed: {exc!r}"

    return wait_until(process, log, finished, state)


def ctrl_c(process: subprocess.Popen[bytes], log: Path) -> None:
    """Press Ctrl-C: SIGINT to the whole foreground process group, then wait for everything to end."""
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError(f"make run did not stop on Ctrl-C:\n{log.read_text()[-4000:]}") from None


def running_database_url(checkout: Path) -> str:
    """Return the DATABASE_URL a running `make run` left for other terminals (the log never shows it)."""
    settings = (checkout / "var" / "local" / "servers.env").read_text()
    return re.search(r"^DATABASE_URL=(\S+)$", settings, re.M).group(1)
