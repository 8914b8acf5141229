"""`LOG_FORMAT=json make run` prints only JSON lines once the launcher's banner is done, from every process.

The launcher (make, the .env and local-server messages, `etl init-db`'s answer, the URLs) prints plain lines
first. From kasparro.procfile's first notice on, through the first ETL run and Ctrl-C, every line is one JSON
object with the same fields, whichever process wrote it.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from kasparro.embedded import free_port
from kasparro.logformat import JSON_FIELDS
from tests.newcomer import ctrl_c, newcomer_env, start, wait_for_first_run
from tests.test_make_run import checkout  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("api.1", "worker.1", "beat.1", "flower.1", "upstream.1")


def parse(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def after_the_banner(lines: list[str]) -> list[str]:
    """Return the lines from kasparro.procfile's first notice on (everything before it is the launcher's)."""
    for index, line in enumerate(lines):
        record = parse(line)
        if record is not None and record.get("name") == "kasparro.procfile":
            return lines[index:]
    raise AssertionError("kasparro.procfile printed no JSON notice:\n" + "\n".join(lines[-40:]))


@pytest.fixture(scope="module")
def json_run(checkout: Path) -> tuple[list[str], dict, int]:  # noqa: F811 - the imported fixture
    """Run `LOG_FORMAT=json make run` until its first run finished, press Ctrl-C; return its lines, run, status."""
    ports = {name: free_port() for name in ("api", "flower", "upstream")}
    env, log = {**newcomer_env(ports), "LOG_FORMAT": "json"}, checkout / "make-run-json.log"
    process = start(checkout, env, log)
    try:
        run = wait_for_first_run(f"http://127.0.0.1:{ports['api']}", process, log)
    finally:
        ctrl_c(process, log)
    return log.read_text().splitlines(), run, process.returncode


def test_after_the_banner_every_line_is_json_with_the_common_fields(json_run: tuple[list[str], dict, int]) -> None:
    lines, _, status = json_run
    tail = after_the_banner(lines)
    records = [parse(line) for line in tail]

    plain = [line for line, record in zip(tail, records) if record is None]
    assert not plain, f"{len(plain)} of {len(tail)} lines are not JSON, e.g.:\n" + "\n".join(plain[:20])
    incomplete = [line for line, record in zip(tail, records) if not set(JSON_FIELDS) | {"service"} <= record.keys()]
    assert not incomplete, "\n".join(incomplete[:10])
    # make itself died of the Ctrl-C, as it should, and printed nothing after the processes' last line.
    assert status == -signal.SIGINT


def test_every_process_and_the_first_run_log_through_json(json_run: tuple[list[str], dict, int]) -> None:
    lines, run, _ = json_run
    by_service: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in filter(None, map(parse, after_the_banner(lines))):
        by_service[record.get("service", "?")].append(record)
    names = {service: {r["name"] for r in records} for service, records in by_service.items()}

    # Each process's own start-up and request lines, which used to be plain text.
    assert {"gunicorn.error", "gunicorn.access"} <= names["api.1"], names["api.1"]
    assert any(r["message"].endswith("ready.") for r in by_service["worker.1"]), names["worker.1"]
    assert any(r["message"].startswith("beat starting") for r in by_service["beat.1"]), names["beat.1"]
    # Flower drops its request lines (tornado.access) by design; its start-up says where it listens.
    assert any(r["message"].startswith("Visit me at") for r in by_service["flower.1"]), names["flower.1"]
    assert any(r["message"].startswith("GET /") for r in by_service["upstream.1"]), names["upstream.1"]
    # The first ETL run, line by line, with its context as fields.
    about_the_run = [r for r in by_service["worker.1"] if r.get("run_id") == run["id"]]
    assert {r.get("source") for r in about_the_run} >= set(run["sources"]), about_the_run[:5]
    # Noise kept out: alembic's plugin announcements, seven per process at import.
    assert not [r for records in by_service.values() for r in records if r["name"] == "alembic.runtime.plugins"]
    # Before the banner ends, `etl init-db` migrates the fresh database: alembic's lines are the app's JSON too.
    migrations = [line for line in lines if "Running upgrade" in line]
    assert migrations and all(parse(line) for line in migrations), migrations[:3]
    # Ctrl-C: every process stopped, and the launcher said so in JSON.
    stopped = {r["message"].split()[0] for r in by_service["system"] if " stopped " in r["message"]}
    assert stopped == set(SERVICES)


def run_procfile(folder: Path, log_format: str) -> list[str]:
    (folder / "Procfile").write_text("json: echo '{\"name\": \"x\", \"message\": \"hi\"}'\nplain: echo plain words\n")
    env = {**os.environ, "LOG_FORMAT": log_format, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "kasparro.procfile", "-f", "Procfile"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    return done.stdout.splitlines()


def test_the_launcher_adds_the_process_to_json_lines_and_never_dresses_plain_ones_as_json(tmp_path: Path) -> None:
    out = run_procfile(tmp_path, "json")

    assert '{"name": "x", "message": "hi", "service": "json.1"}' in out
    # A plain line stays plain, so the test above sees it.
    assert "plain.1 | plain words" in out
    notices = [parse(line) for line in out if "kasparro.procfile" in line]
    assert notices and all(set(JSON_FIELDS) | {"service"} <= notice.keys() for notice in notices)
    assert {notice["message"].split(" (")[0] for notice in notices} >= {"json.1 stopped", "plain.1 stopped"}
    # Without LOG_FORMAT=json the output is honcho's, prefixes and all.
    assert any(re.fullmatch(r"\d\d:\d\d:\d\d json\.1\s+\| \{.*\}", line) for line in run_procfile(tmp_path, "console"))
