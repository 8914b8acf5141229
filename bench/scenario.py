"""Run one bench scenario: a fresh database, a COPY baseline, a real worker, three timed runs, the checks."""
from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench import data
from bench.database import build_app, discard
from bench.procs import ProcSampler, start_worker, stop_worker

SOURCE = "bench_csv"
COLUMNS = {"source_asset_id": "currency", "observed_at": "date", "price_usd": "close",
           "volume_24h_usd": "volume", "market_cap_usd": "market_cap"}
COUNTERS = ("extracted", "loaded", "inserted", "updated", "skipped", "rejected")
_STATUS = text(
    "SELECT r.status, r.error, sr.status, sr.stage, sr.error, "
    + ", ".join(f"sr.{c}" for c in COUNTERS)
    + ", sr.started_at - r.created_at AS queued"
    " FROM runs r JOIN run_sources sr ON sr.run_id = r.id WHERE r.id = :r"
)
FINAL = ("success", "partial", "failed")
# The baseline's plain table: the bench file's columns, no key, no index.
COPY_TABLE = ("CREATE TABLE bench_copy (currency text, date date, open numeric, high numeric,"
              " low numeric, close numeric, volume numeric, market_cap numeric)")


@dataclass(frozen=True)
class Settings:
    """What one scenario runs: file size, worker processes and where the servers are."""

    rows: int
    workers: int
    batch_size: int | None  # None: BATCH_SIZE unset, each kind's default
    append_pct: float
    copies: int
    timeout: float
    db_server: str
    broker: str
    profile: bool = False
    # Worker processes started apart, each a Celery node of its own on the bench's queue, as workers on
    # separate machines would be; each runs `workers` pool processes.
    nodes: int = 1

    @property
    def appended(self) -> int:
        """Rows appended for the incremental run."""
        return max(round(self.rows * self.append_pct / 100), 0)


@dataclass
class RunResult:
    """What one timed run did."""

    label: str
    seconds: float
    status: str
    counts: dict[str, int]
    stages: dict[str, float] = field(default_factory=dict)
    queued: float = 0.0
    peak_total_kib: int = 0
    peak_process_kib: int = 0
    cpu_worker: float = 0.0
    cpu_postgres: float = 0.0
    error: str | None = None


@dataclass
class Scenario:
    """One scenario's baseline, runs and problems (an empty list when every check passed)."""

    settings: Settings
    file_mib: float = 0.0
    copy_s: float = 0.0
    copy_all: list[float] = field(default_factory=list)
    idle_kib: tuple[int, int] = (0, 0)
    results: list[RunResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # Tasks each worker node finished (from its log), with --nodes above 1: whether they all took part.
    node_tasks: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Return the scenario as plain JSON-ready data."""
        return {key: value for key, value in asdict(self).items() if key != "settings"}


def write_sources(path: Path, csv_path: Path) -> None:
    """Declare the bench file as CSV source `bench_csv` in a sources.toml."""
    lines = [f"[sources.{SOURCE}]", 'kind = "csv"', f'path = "{csv_path}"', 'date_format = "%Y-%m-%d"',
             "settle_seconds = 0", f"[sources.{SOURCE}.columns]"]
    lines += [f'{k} = "{v}"' for k, v in COLUMNS.items()]
    path.write_text("\n".join(lines) + "\n")


def _copy_once(raw: Any, csv_path: Path, expected: int) -> float:
    cursor = raw.cursor()
    cursor.execute("DROP TABLE IF EXISTS bench_copy")
    cursor.execute(COPY_TABLE)
    raw.commit()
    started = time.perf_counter()
    with open(csv_path, encoding="utf-8") as handle:
        cursor.copy_expert("COPY bench_copy FROM STDIN (FORMAT csv, HEADER)", handle)
    raw.commit()
    seconds = time.perf_counter() - started
    cursor.execute("SELECT count(*) FROM bench_copy")
    copied = cursor.fetchone()[0]
    if copied != expected:
        raise RuntimeError(f"baseline COPY loaded {copied} rows, expected {expected}")
    cursor.execute("DROP TABLE bench_copy")
    raw.commit()
    return seconds


def copy_baseline(url: str, csv_path: Path, expected: int, repeats: int) -> tuple[float, list[float]]:
    """Time a plain COPY of the file into a plain table; return (median, all timings)."""
    engine = create_engine(url)
    timings = []
    try:
        for _ in range(max(repeats, 1)):
            raw = engine.raw_connection()
            try:
                timings.append(_copy_once(raw, csv_path, expected))
            finally:
                raw.close()
    finally:
        engine.dispose()
    return statistics.median(timings), timings


def _poll(app: Any, run_id: int, started: float, timeout: float) -> tuple[Any, float, dict[str, float]]:
    from kasparro.db import db

    stage, stage_since, stages = "queued", started, {}
    while True:
        row = db.session.execute(_STATUS, {"r": run_id}).one()
        db.session.commit()
        now = time.perf_counter()
        status, current = row[0], row[3] or ("done" if row[0] in FINAL else stage)
        if current != stage:
            stages[stage] = stages.get(stage, 0.0) + now - stage_since
            stage, stage_since = current, now
        if status in FINAL:
            stages.pop("queued", None)
            return row, now - started, stages
        if now > started + timeout:
            raise RuntimeError(f"run {run_id} did not finish within {timeout:.0f}s (stage {stage})")
        time.sleep(0.05)


def timed_run(app: Any, label: str, sampler: ProcSampler, timeout: float) -> RunResult:
    """Queue a run of the bench source and poll until it is finished; time it and its stages."""
    from kasparro.db import db
    from kasparro.tasks import enqueue_run

    with app.app_context():
        sampler.reset()
        started = time.perf_counter()
        start = enqueue_run("cli", [SOURCE])
        if not start.created:
            raise RuntimeError(f"run {start.run.id} was already active")
        run_id = start.run.id
        db.session.commit()
        row, seconds, stages = _poll(app, run_id, started, timeout)
    used = sampler.reset()
    counts = dict(zip(COUNTERS, row[5:5 + len(COUNTERS)]))
    queued = row[-1].total_seconds() if row[-1] is not None else 0.0
    print(f"{label}: {seconds:.2f}s {row[0]}", flush=True)
    return RunResult(label, seconds, row[0], counts, stages, queued, used["peak_total"], used["peak_process"],
                     used["cpu_worker"], used["cpu_postgres"], row[4] or row[1])


def quote_count(app: Any) -> int:
    """Count the bench source's rows in market_quotes."""
    from kasparro.db import db

    with app.app_context():
        count = db.session.execute(text("SELECT count(*) FROM market_quotes WHERE source = :s"),
                                   {"s": SOURCE}).scalar_one()
        db.session.commit()
        return count


def check(problems: list[str], result: RunResult, status: str = "success", **expected: int) -> None:
    """Add a problem for a run that did not end with `status` or whose counts differ from `expected`."""
    if result.status != status:
        problems.append(f"{result.label}: status {result.status}" + (f" ({result.error})" if result.error else ""))
    for name, value in expected.items():
        if result.counts.get(name) != value:
            problems.append(f"{result.label}: {name} = {result.counts.get(name)}, expected {value}")


def _app_settings(settings: Settings, db_url: str, queue: str, sources_file: Path) -> dict[str, str]:
    batch = {} if settings.batch_size is None else {"BATCH_SIZE": str(settings.batch_size)}
    return {"DATABASE_URL": db_url, "BROKER_URL": settings.broker, "RESULT_BACKEND": settings.broker,
            "REDIS_URL": settings.broker, "TASK_QUEUE": queue, "SOURCES_FILE": str(sources_file), **batch}


def _build(settings: Settings, db_url: str, env: dict[str, str]) -> Any:
    overrides = {k: v for k, v in env.items() if k not in ("DATABASE_URL", "BATCH_SIZE")}
    return build_app(db_url, {**overrides, "ENABLED_SOURCES": [], "OFFLINE": False,
                              "BATCH_SIZE": settings.batch_size, "LOG_LEVEL": "WARNING"})


def _runs(app: Any, scenario: Scenario, sampler: ProcSampler, csv_path: Path) -> None:
    settings, problems, results = scenario.settings, scenario.problems, scenario.results
    rows, appended = settings.rows, settings.appended
    results.append(timed_run(app, "ours: first run (end to end)", sampler, settings.timeout))
    check(problems, results[0], extracted=rows, inserted=rows, updated=0, rejected=0)
    if quote_count(app) != rows:
        problems.append(f"first run: market_quotes holds {quote_count(app)} rows, expected {rows}")
    results.append(timed_run(app, "ours: unchanged re-run", sampler, settings.timeout))
    check(problems, results[1], inserted=0, updated=0, rejected=0)
    if appended:
        data.append(csv_path, rows, appended)
        results.append(timed_run(app, f"ours: +{settings.append_pct:g}% appended", sampler, settings.timeout))
        check(problems, results[2], inserted=appended, updated=0, rejected=0)
    if quote_count(app) != rows + appended:
        problems.append(f"market_quotes holds {quote_count(app)} rows, expected {rows + appended}")


def run_scenario(settings: Settings, template: Path, workdir: Path, tag: str,
                 report: Callable[[Scenario], None]) -> Scenario:
    """Run one scenario on a copy of `template`, `report` it, then profile if asked; always clean up."""
    db_url = f"{settings.db_server.rstrip('/')}/kasparro_bench_{tag}"
    queue, node = f"kasparro-bench-{tag}", f"bench-{tag}@{os.uname().nodename}"
    csv_path, sources_file, log = workdir / "bench.csv", workdir / "sources.toml", workdir / "worker.log"
    shutil.copyfile(template, csv_path)
    write_sources(sources_file, csv_path)
    scenario = Scenario(settings, file_mib=csv_path.stat().st_size / 2**20)
    env = _app_settings(settings, db_url, queue, sources_file)
    app = sampler = None
    workers: list[Any] = []
    try:
        app = _build(settings, db_url, env)
        scenario.copy_s, scenario.copy_all = copy_baseline(db_url, csv_path, settings.rows, settings.copies)
        print(f"baseline COPY: {scenario.copy_s:.2f}s", flush=True)
        for n in range(settings.nodes):
            name = node if settings.nodes == 1 else f"bench-{tag}-{n + 1}@{os.uname().nodename}"
            workers.append(start_worker({**env, "LOG_LEVEL": "INFO"}, queue, name, settings.workers,
                                        log.with_name(f"worker-{n + 1}.log") if n else log,
                                        app.extensions["celery"].control.ping))
        sampler = ProcSampler([w.pid for w in workers], make_url(db_url).database)
        scenario.idle_kib = sampler.sample()
        sampler.start()
        _runs(app, scenario, sampler, csv_path)
        if settings.nodes > 1:
            scenario.node_tasks = [_finished_tasks(log.with_name(f"worker-{n}.log") if n > 1 else log)
                                   for n in range(1, settings.nodes + 1)]
        report(scenario)
        if settings.profile:
            sampler.stop()
            for worker in workers:
                stop_worker(worker)
            workers = []
            profile(app)
    except Exception as exc:  # noqa: BLE001 - report, clean up, fail
        scenario.problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        _clean_up(app, db_url, workers, sampler, settings.broker, queue)
        if scenario.problems and log.exists():
            print(f"\n--- worker log tail ({log}) ---\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
    return scenario


def _finished_tasks(log: Path) -> int:
    """Count the tasks a worker's log says succeeded (Celery's "Task ... succeeded in" lines)."""
    return sum(" succeeded in " in line for line in log.read_text(errors="replace").splitlines())


def _clean_up(app: Any, db_url: str, workers: list[Any], sampler: ProcSampler | None, broker: str,
              queue: str) -> None:
    if sampler:
        sampler.stop()
    for worker in workers:
        stop_worker(worker)
    discard(app, db_url)
    forget_queue(broker, queue)


def profile(app: Any) -> None:
    """Empty the tables and run the three stages in-process under cProfile."""
    from bench.profile import profile_stages
    from kasparro.db import db

    with app.app_context():
        tables = [t.name for t in db.metadata.sorted_tables if t.name != "alembic_version"]
        db.session.execute(text("TRUNCATE " + ", ".join(tables) + " RESTART IDENTITY CASCADE"))
        db.session.commit()
    print("\nProfile: the same file, stages run in-process under cProfile on emptied tables")
    profile_stages(app, SOURCE)


def forget_queue(broker: str, queue: str) -> None:
    """Delete the Redis keys of this bench's private queue (best effort)."""
    if not broker.startswith("redis"):
        return
    try:
        import redis

        client = redis.Redis.from_url(broker)
        keys = list(client.scan_iter(match=f"*{queue}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    except Exception as exc:  # noqa: BLE001 - leftover keys of a private queue harm nothing
        print(f"could not delete the keys of queue {queue}: {exc}", file=sys.stderr)
