"""`python -m bench --e2e --grow N`: the cost of a load, and of the API's reads, as the quotes table grows.

On the whole stack of `make run` (bench.stack), the bench file of --rows is loaded, then N more files' worth are
appended one step at a time, each step a POST /run-etl followed like a user (bench.http_run) and checked: every
appended row inserted, none updated or rejected. After each step the reads a dashboard makes are timed, each
the median of READS requests: the first page of /data, the oldest page (sort=observed_at), a page in the middle
of the table (a cursor made for the row at half the table), one coin's page, /data/latest, /stats and /sources.

Goals (issue 22): every load within 1.3x of the first, every read under 50 ms.

The bench file's dates are 2009-2019, months without a partition, so its rows go to `market_quotes_default`.
With --monthly, the daily partition pass runs after each step, as beat would, timed apart from the load: it
makes the partitions of the months the step brought and moves their rows out of DEFAULT, which must then be
empty. Once the months of the file all have partitions (after a first step of 40,000 rows or more, the
file's dates covering 2009-2019), every later step loads into monthly partitions.
"""
from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench import data
from bench.e2e import absent_beat_keys, tear_down
from bench.http_run import request, timed_http_run
from bench.procs import ProcSampler
from bench.scenario import SOURCE, Settings, _app_settings, _build, check, quote_count, write_sources
from bench.stack import Stack

READS = 7  # requests per read and step; the median counts
LOAD_GOAL = 1.3  # each step's load over the first's
READ_GOAL_MS = 50.0


@dataclass
class Step:
    """One step: the rows loaded, the table's size after it, the load's time and CPU, and each read's median."""

    rows: int
    total: int
    seconds: float
    status: str
    cpu_stack: float
    cpu_postgres: float
    reads_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class Growth:
    """A grow scenario: its steps, and what went wrong (empty when every count and read checked)."""

    settings: Settings
    steps: list[Step] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # With --monthly, per step: partitions made, rows moved out of DEFAULT, and the seconds the pass took.
    partitioned: list[dict[str, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Return the steps, the partition pass and the problems as plain JSON-ready data."""
        return {"steps": [asdict(step) for step in self.steps], "partitioned": self.partitioned,
                "problems": self.problems}


def _partition_months(app: Any, growth: Growth) -> None:
    """Run the daily partition pass, as `etl partitions` does, and record what it did and how long it took."""
    from kasparro.db import db
    from kasparro.pipeline import partitions

    with app.app_context():
        started = time.perf_counter()
        # The file's months are history (2009-2019): moved only when asked (QUOTES_PARTITION_HISTORY).
        done = partitions.ensure_partitions(db.session, app.config["QUOTES_PARTITION_MONTHS_AHEAD"], history=True)
        db.session.commit()
        seconds = time.perf_counter() - started
    growth.partitioned.append({"partitions": len(done.created), "moved": done.moved, "seconds": seconds})
    print(f"partition pass: {len(done.created)} monthly partitions made, {done.moved:,} rows moved out of "
          f"{partitions.DEFAULT} in {seconds:.2f}s", flush=True)


def _left_in_default(app: Any) -> int:
    from kasparro.db import db
    from kasparro.pipeline import partitions

    with app.app_context():
        return db.session.execute(text(f"SELECT count(*) FROM {partitions.DEFAULT}")).scalar_one()


def _middle_cursor(app: Any, total: int) -> str:
    """A /data cursor (newest first, no filter) for the row half way down the table, made as the API makes one."""
    from kasparro.api import cursor
    from kasparro.api.data import quote_filters
    from kasparro.db import db

    with app.app_context():
        observed, quote_id = db.session.execute(text(
            "SELECT observed_at, id FROM market_quotes ORDER BY observed_at DESC, id DESC OFFSET :n LIMIT 1"),
            {"n": total // 2}).one()
    return cursor.encode([observed, quote_id], cursor.fingerprint("data", quote_filters({})))


def _reads(stack: Stack, app: Any, total: int, problems: list[str]) -> dict[str, float]:
    """Time each read READS times; return the medians in ms (a read that is not 200 is a problem)."""
    paths = {"/data first page": "/data?limit=100", "/data oldest page": "/data?limit=100&sort=observed_at",
             "/data one coin": "/data?limit=100&asset=bitcoin", "/data/latest": "/data/latest",
             "/stats": "/stats", "/sources": "/sources"}
    paths["/data middle page"] = f"/data?limit=100&cursor={_middle_cursor(app, total)}"
    medians = {}
    for label, path in paths.items():
        timings = []
        for _ in range(READS):
            started = time.perf_counter()
            status, _, body = request("GET", stack.api + path, stack.api_key)
            timings.append((time.perf_counter() - started) * 1000)
            if status != 200:
                problems.append(f"{label} answered {status} at {total:,} rows: {str(body)[:300]}")
                break
        medians[label] = statistics.median(timings)
    return medians


def run_growth(settings: Settings, steps: int, template: Path, workdir: Path, tag: str,
               monthly: bool = False) -> Growth:
    """Load `template`, then append its size `steps` times, timing each load and the reads after it (`monthly`:
    into monthly partitions from the second step on)."""
    db_url = f"{settings.db_server.rstrip('/')}/kasparro_bench_{tag}"
    queue = f"kasparro-bench-{tag}"
    csv_path, sources_file = workdir / "bench.csv", workdir / "sources.toml"
    shutil.copyfile(template, csv_path)
    write_sources(sources_file, csv_path)
    growth = Growth(settings)
    env = _app_settings(settings, db_url, queue, sources_file)
    app = stack = sampler = None
    beat_keys: list[str] = []
    try:
        app = _build(settings, db_url, env)
        stack = Stack(workdir, tag, settings.workers, env)
        beat_keys = absent_beat_keys(settings.broker)
        stack.start_ready(app.extensions["celery"].control.ping)
        sampler = ProcSampler(stack.process.pid, make_url(db_url).database)
        sampler.start()
        total = 0
        for step in range(steps + 1):
            if step:
                data.append(csv_path, total, settings.rows)
            sampler.reset()
            run = timed_http_run(stack.api, stack.api_key, SOURCE, f"step {step}: +{settings.rows:,}",
                                 settings.timeout)
            used = sampler.reset()
            check(growth.problems, run, inserted=settings.rows, updated=0, rejected=0)
            total += settings.rows
            if quote_count(app) != total:
                growth.problems.append(f"step {step}: market_quotes holds {quote_count(app):,}, expected {total:,}")
            growth.steps.append(Step(settings.rows, total, run.seconds, run.status, used["cpu_worker"],
                                     used["cpu_postgres"], _reads(stack, app, total, growth.problems)))
            print_step(growth, growth.steps[-1])
            if monthly:
                _partition_months(app, growth)
            if monthly and (stray := _left_in_default(app)):
                growth.problems.append(f"step {step}: {stray:,} rows in DEFAULT after the partition pass")
            if growth.problems:
                break
    except Exception as exc:  # noqa: BLE001 - report, clean up, fail
        growth.problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        tear_down(stack, sampler, app, db_url, (settings.broker, tag, beat_keys), bool(growth.problems))
    return growth


def print_step(growth: Growth, step: Step) -> None:
    """Print one step as it finishes: size, load time, its ratio to the first, and the slowest read."""
    first = growth.steps[0].seconds
    slowest = max(step.reads_ms.items(), key=lambda item: item[1], default=("-", 0.0))
    print(f"{step.total:>12,} rows  load {step.seconds:7.2f}s  {step.seconds / first:5.2f}x of the first"
          f"  CPU stack/pg {step.cpu_stack:.1f}/{step.cpu_postgres:.1f}s  slowest read {slowest[0]} "
          f"{slowest[1]:.1f} ms", flush=True)


def print_growth(growth: Growth) -> None:
    """Print the curve: one line per step with every read, then the goals."""
    if not growth.steps:
        return
    labels = list(growth.steps[0].reads_ms)
    print("\nGrowth: each step's load (POST to final /runs/<id>) and the median of "
          f"{READS} requests of each read after it, in ms")
    print(f"{'rows after':>12} {'load s':>8} {'x 1st':>6} " + " ".join(f"{label:>18}" for label in labels))
    first = growth.steps[0].seconds
    for step in growth.steps:
        print(f"{step.total:>12,} {step.seconds:>8.2f} {step.seconds / first:>6.2f} "
              + " ".join(f"{step.reads_ms.get(label, float('nan')):>18.1f}" for label in labels))
    worst_load = max(step.seconds / first for step in growth.steps)
    worst_read = max((ms for step in growth.steps for ms in step.reads_ms.values()), default=0.0)
    verdict = {True: "met", False: "missed"}
    for step, done in zip(growth.steps, growth.partitioned):
        print(f"partition pass after {step.total:,} rows: {done['partitions']:.0f} monthly partitions made, "
              f"{done['moved']:,.0f} rows moved into them, {done['seconds']:.2f}s")
    print(f"goal: every load within {LOAD_GOAL}x of the first -> worst {worst_load:.2f}x, "
          f"{verdict[worst_load <= LOAD_GOAL]}")
    print(f"goal: every read under {READ_GOAL_MS:.0f} ms -> worst {worst_read:.1f} ms, "
          f"{verdict[worst_read < READ_GOAL_MS]}")
