"""Time one run as a user sees it: POST /run-etl, then GET /runs/<id> every 100 ms until the run is final."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bench.scenario import FINAL, RunResult


@dataclass
class HttpRun(RunResult):
    """A run timed over HTTP: `seconds` is from sending the POST to seeing the final state.

    Besides the client's view (POST answered, first task seen started, each stage as polled) it keeps the
    server's own clock (the run's created, started and finished times), so the poll's lag shows apart.
    """

    source: str = ""
    post_s: float = 0.0
    started_s: float | None = None  # first poll showing the source run started
    server_s: float | None = None  # run finished_at - created_at
    polls: int = 0
    run_id: int = 0


def request(method: str, url: str, key: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
    """Send one request as a user's script would; return (status, headers, JSON body)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"X-API-Key": key, "Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, dict(response.headers), json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode(errors="replace")


def _seconds(later: str | None, earlier: str | None) -> float | None:
    if not later or not earlier:
        return None
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def timed_http_run(api: str, key: str, source: str, label: str, timeout: float, poll: float = 0.1) -> HttpRun:
    """POST a run of `source`, poll its Location until final, and time each stage the polls saw."""
    started = time.perf_counter()
    status, headers, body = request("POST", f"{api}/run-etl", key, {"sources": [source]})
    post_s = time.perf_counter() - started
    if status != 202 or not isinstance(body, dict) or not body["data"]["created"]:
        raise RuntimeError(f"POST /run-etl answered {status}, not 202 with a new run: {str(body)[:500]}")
    location = headers["Location"]
    stage, since, stages, started_s, polls = "queued", started, {}, None, 0
    while True:
        status, _, body = request("GET", api + location, key)
        now, polls = time.perf_counter(), polls + 1
        if status != 200:
            raise RuntimeError(f"GET {location} answered {status}: {str(body)[:500]}")
        run = body["data"]
        part = next(sr for sr in run["source_runs"] if sr["source"] == source)
        if started_s is None and part["started_at"]:
            started_s = now - started
        current = part["progress"]["stage"]
        if current != stage:
            # A stage is charged from the poll that first saw it to the poll that saw the next one.
            stages[stage] = stages.get(stage, 0.0) + now - since
            stage, since = current, now
        if run["status"] in FINAL:
            break
        if now > started + timeout:
            raise RuntimeError(f"run {run['id']} was not final after {timeout:.0f}s (stage {stage})")
        time.sleep(poll)
    seconds = now - started
    print(f"{label}: {seconds:.2f}s {run['status']}", flush=True)
    counts = {name: part[name] for name in ("extracted", "loaded", "inserted", "updated", "skipped", "rejected")}
    # `queued` is the server's clock, as in the worker-only bench: the source run's start after the run's creation.
    queued = _seconds(part["started_at"], run["created_at"]) or 0.0
    return HttpRun(label, seconds, run["status"], counts, stages, queued, error=part["error"] or run["error"],
                   source=source, post_s=post_s, started_s=started_s,
                   server_s=_seconds(run["finished_at"], run["created_at"]), polls=polls, run_id=run["id"])
