"""`python -m bench`: load a large CSV end to end and compare with a plain COPY of the same file.

Steps (see bench/README.md): generate the file, build a throwaway database with
the migrations, time a plain COPY (the baseline), start a real Celery worker,
time a full run, an unchanged re-run and a run after appending 1%, check the
row counts, print one table, drop the database. Exit status 1 if a run did not
succeed or a count is wrong, so the bench doubles as a correctness check.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ["ENV_FILE"] = ""  # the bench never reads a developer's .env

from sqlalchemy import create_engine, text  # noqa: E402

from bench import data  # noqa: E402
from bench.database import build_app, discard  # noqa: E402
from bench.procs import ProcSampler, start_worker, stop_worker  # noqa: E402
from kasparro.config import ConfigError, normalise_database_url  # noqa: E402

SOURCE = "bench_csv"
COLUMNS = {"source_asset_id": "currency", "observed_at": "date", "price_usd": "close",
           "volume_24h_usd": "volume", "market_cap_usd": "market_cap"}
TARGET_RATIO, STRETCH_RATIO, RERUN_TARGET = 8.0, 6.0, 0.05


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows in the bench file (default 200000)")
    parser.add_argument("--batch-size", type=int, default=int(os.environ.get("BATCH_SIZE") or 5000),
                        help="worker BATCH_SIZE (default 5000)")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--append-pct", type=float, default=1.0, help="rows appended for the incremental run, %%")
    parser.add_argument("--copies", type=int, default=3, help="baseline COPY repetitions; the median counts")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for one run")
    parser.add_argument("--profile", action="store_true",
                        help="afterwards, run the stages in-process under cProfile and print the hotspots")
    parser.add_argument("--skip-paging", action="store_true",
                        help="do not run the API paging bench (python -m bench.paging) afterwards")
    parser.add_argument("--db-server", default=os.environ.get("BENCH_DATABASE_SERVER",
                                                              "postgresql+psycopg2://postgres@127.0.0.1:5432"))
    parser.add_argument("--broker", default=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args(argv)
    if args.rows < 1 or args.batch_size < 1:
        parser.error("--rows and --batch-size must be positive")
    try:
        # The baseline COPY opens its own engine, so it needs the driver named as the app does.
        args.db_server = normalise_database_url(args.db_server)
    except ConfigError as exc:
        parser.error(f"--db-server: {exc}")
    return args


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def write_sources(path: Path, csv_path: Path) -> None:
    lines = [f"[sources.{SOURCE}]", 'kind = "csv"', f'path = "{csv_path}"', 'date_format = "%Y-%m-%d"',
             "settle_seconds = 0", f"[sources.{SOURCE}.columns]"]
    lines += [f'{k} = "{v}"' for k, v in COLUMNS.items()]
    path.write_text("\n".join(lines) + "\n")


def copy_baseline(url: str, csv_path: Path, expected: int, repeats: int) -> tuple[float, list[float]]:
    """Time a plain COPY of the file into a plain table; return (median, all timings)."""
    engine = create_engine(url)
    timings = []
    try:
        for _ in range(max(repeats, 1)):
            raw = engine.raw_connection()
            try:
                cursor = raw.cursor()
                cursor.execute("DROP TABLE IF EXISTS bench_copy")
                cursor.execute("CREATE TABLE bench_copy (currency text, date date, open numeric, high numeric,"
                               " low numeric, close numeric, volume numeric, market_cap numeric)")
                raw.commit()
                started = time.perf_counter()
                with open(csv_path, encoding="utf-8") as handle:
                    cursor.copy_expert("COPY bench_copy FROM STDIN (FORMAT csv, HEADER)", handle)
                raw.commit()
                timings.append(time.perf_counter() - started)
                cursor.execute("SELECT count(*) FROM bench_copy")
                copied = cursor.fetchone()[0]
                if copied != expected:
                    raise RuntimeError(f"baseline COPY loaded {copied} rows, expected {expected}")
                cursor.execute("DROP TABLE bench_copy")
                raw.commit()
            finally:
                raw.close()
    finally:
        engine.dispose()
    return statistics.median(timings), timings


COUNTERS = ("extracted", "loaded", "inserted", "updated", "skipped", "rejected")
_STATUS = text(
    "SELECT r.status, r.error, sr.status, sr.stage, sr.error, "
    + ", ".join(f"sr.{c}" for c in COUNTERS)
    + ", sr.started_at - r.created_at AS queued"
    " FROM runs r JOIN run_sources sr ON sr.run_id = r.id WHERE r.id = :r"
)


def timed_run(app: Any, label: str, sampler: ProcSampler | None, timeout: float) -> RunResult:
    """Queue a run of the bench source and poll until it is finished; time it and its stages."""
    from kasparro.db import db
    from kasparro.tasks import enqueue_run

    with app.app_context():
        if sampler:
            sampler.reset()
        started = time.perf_counter()
        start = enqueue_run("cli", [SOURCE])
        run, created = start.run, start.created
        if not created:
            raise RuntimeError(f"run {run.id} was already active")
        run_id = run.id
        db.session.commit()
        stage, stage_since, stages = "queued", started, {}
        deadline = started + timeout
        while True:
            row = db.session.execute(_STATUS, {"r": run_id}).one()
            db.session.commit()
            now = time.perf_counter()
            status, run_error, _, current, source_error = row[:5]
            current = current or ("done" if status in ("success", "partial", "failed") else stage)
            if current != stage:
                stages[stage] = stages.get(stage, 0.0) + now - stage_since
                stage, stage_since = current, now
            if status in ("success", "partial", "failed"):
                seconds = now - started
                break
            if now > deadline:
                raise RuntimeError(f"run {run_id} did not finish within {timeout:.0f}s (stage {stage})")
            time.sleep(0.05)
        counts = dict(zip(COUNTERS, row[5:5 + len(COUNTERS)]))
        queued = row[-1].total_seconds() if row[-1] is not None else 0.0
    used = sampler.reset() if sampler else {}
    stages.pop("queued", None)
    return RunResult(label, seconds, status, counts, stages, queued, used.get("peak_total", 0),
                     used.get("peak_process", 0), used.get("cpu_worker", 0.0), used.get("cpu_postgres", 0.0),
                     source_error or run_error)


def quote_count(app: Any) -> int:
    from kasparro.db import db

    with app.app_context():
        count = db.session.execute(text("SELECT count(*) FROM market_quotes WHERE source = :s"),
                                   {"s": SOURCE}).scalar_one()
        db.session.commit()
        return count


def check(problems: list[str], result: RunResult, **expected: int) -> None:
    if result.status != "success":
        problems.append(f"{result.label}: status {result.status}" + (f" ({result.error})" if result.error else ""))
    for name, value in expected.items():
        if result.counts.get(name) != value:
            problems.append(f"{result.label}: {name} = {result.counts.get(name)}, expected {value}")


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f}" if kib else "-"


def print_table(rows: int, appended: int, copy_s: float, copy_all: list[float], results: list[RunResult],
                idle: tuple[int, int], args: argparse.Namespace, file_mib: float) -> None:
    first = results[0]
    print()
    print(f"Kasparro ETL bench: {rows:,} rows ({file_mib:.1f} MiB), BATCH_SIZE {args.batch_size}, "
          f"worker -c {args.concurrency}, {os.cpu_count()} CPUs")
    print(f"bench file {data.describe()}")
    print()
    head = (f"{'step':<34} {'rows':>10} {'seconds':>9} {'rows/s':>10} {'vs COPY':>9} {'of 1st':>7} "
            f"{'RSS MiB':>9} {'CPU s wkr/pg':>13}")
    print(head)
    print("-" * len(head))
    copies = ", ".join(f"{t:.2f}" for t in copy_all)
    print(f"{'baseline: COPY into plain table':<34} {rows:>10,} {copy_s:9.2f} {rows / copy_s:10,.0f} "
          f"{'1.0x':>9}")
    for result in results:
        loaded = result.counts["inserted"] + result.counts["updated"]
        per_row = f"{loaded / result.seconds:10,.0f}" if loaded else f"{'-':>10}"
        ratio = f"{result.seconds / copy_s:8.1f}x" if result is first else f"{'':>9}"
        share = f"{result.seconds / first.seconds:7.1%}" if result is not first else f"{'':>7}"
        rss = f"{mib(result.peak_process_kib)}/{mib(result.peak_total_kib)}"
        cpu = f"{result.cpu_worker:.1f}/{result.cpu_postgres:.1f}"
        print(f"{result.label:<34} {loaded:>10,} {result.seconds:9.2f} {per_row} {ratio} {share} {rss:>9} {cpu:>13}")
        if result.stages:
            parts = ", ".join(f"{name} {secs:.2f}s ({secs / result.seconds:.0%})"
                              for name, secs in result.stages.items())
            print(f"{'':<4}stages: queue wait {result.queued:.2f}s, {parts}")
        c = result.counts
        print(f"{'':<4}counts: extracted {c['extracted']:,}, inserted {c['inserted']:,}, updated {c['updated']:,},"
              f" unchanged/skipped {c['skipped']:,}, rejected {c['rejected']:,}; status {result.status}")
    print()
    print(f"COPY timings (median used): {copies} s. RSS = peak of the busiest worker process / peak of the "
          f"whole worker tree, sampled every 0.2 s (idle: {mib(idle[0])} MiB tree).\n"
          "CPU s = CPU seconds used during the run by the worker tree / by all local postgres processes.")
    ratio = first.seconds / copy_s
    verdict = "met" if ratio <= TARGET_RATIO else "missed"
    stretch = "met" if ratio <= STRETCH_RATIO else "missed"
    rerun = results[1].seconds / first.seconds
    print(f"roadmap: end to end within {TARGET_RATIO:.0f}x of COPY -> {ratio:.1f}x, {verdict} "
          f"(stretch {STRETCH_RATIO:.0f}x {stretch}); unchanged re-run under {RERUN_TARGET:.0%} of the first -> "
          f"{rerun:.1%}, {'met' if rerun < RERUN_TARGET else 'missed'}")
    if appended:
        print(f"incremental: {appended:,} appended rows ({args.append_pct:g}%) took "
              f"{results[2].seconds / first.seconds:.1%} of the first run")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    tag = str(os.getpid())
    db_url = f"{args.db_server.rstrip('/')}/kasparro_bench_{tag}"
    queue, node = f"kasparro-bench-{tag}", f"bench-{tag}@{os.uname().nodename}"
    workdir = Path(tempfile.mkdtemp(prefix="kasparro-bench-"))
    csv_path, sources_file, log = workdir / "bench.csv", workdir / "sources.toml", workdir / "worker.log"
    appended = max(int(round(args.rows * args.append_pct / 100)), 0)
    worker = sampler = app = None
    problems: list[str] = []
    try:
        started = time.perf_counter()
        data.write(csv_path, args.rows)
        file_mib = csv_path.stat().st_size / 2**20
        print(f"wrote {args.rows:,} rows ({file_mib:.1f} MiB) to {csv_path} in {time.perf_counter() - started:.1f}s"
              f" — {data.describe()}", flush=True)
        write_sources(sources_file, csv_path)

        app = build_app(db_url, {
            "BROKER_URL": args.broker, "RESULT_BACKEND": args.broker,
            "REDIS_URL": args.broker, "TASK_QUEUE": queue, "SOURCES_FILE": str(sources_file),
            "ENABLED_SOURCES": [], "OFFLINE": False, "BATCH_SIZE": args.batch_size, "LOG_LEVEL": "WARNING",
        })

        copy_s, copy_all = copy_baseline(db_url, csv_path, args.rows, args.copies)
        print(f"baseline COPY: {copy_s:.2f}s (median of {', '.join(f'{t:.2f}' for t in copy_all)})", flush=True)

        celery = app.extensions["celery"]
        worker = start_worker(
            {"DATABASE_URL": db_url, "BROKER_URL": args.broker, "RESULT_BACKEND": args.broker,
             "REDIS_URL": args.broker, "TASK_QUEUE": queue, "SOURCES_FILE": str(sources_file),
             "BATCH_SIZE": str(args.batch_size), "LOG_LEVEL": "INFO"},
            queue, node, args.concurrency, log, celery.control.ping)
        sampler = ProcSampler(worker.pid)
        idle = sampler.sample()
        sampler.start()
        print(f"worker pid {worker.pid} on queue {queue} (log {log})", flush=True)

        results = [timed_run(app, "ours: first run (end to end)", sampler, args.timeout)]
        print(f"first run: {results[0].seconds:.2f}s {results[0].status}", flush=True)
        check(problems, results[0], extracted=args.rows, inserted=args.rows, updated=0, rejected=0)
        if quote_count(app) != args.rows:
            problems.append(f"first run: market_quotes holds {quote_count(app)} rows, expected {args.rows}")

        results.append(timed_run(app, "ours: unchanged re-run", sampler, args.timeout))
        print(f"unchanged re-run: {results[1].seconds:.2f}s {results[1].status}", flush=True)
        check(problems, results[1], inserted=0, updated=0, rejected=0)

        if appended:
            data.append(csv_path, args.rows, appended)
            results.append(timed_run(app, f"ours: +{args.append_pct:g}% appended", sampler, args.timeout))
            print(f"append run: {results[2].seconds:.2f}s {results[2].status}", flush=True)
            check(problems, results[2], inserted=appended, updated=0, rejected=0)
        if quote_count(app) != args.rows + appended:
            problems.append(f"market_quotes holds {quote_count(app)} rows, expected {args.rows + appended}")

        print_table(args.rows, appended, copy_s, copy_all, results, idle, args, file_mib)

        if args.profile:
            sampler.stop()
            stop_worker(worker)
            worker = None
            _profile(app)
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    except Exception as exc:  # report, clean up, fail
        problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        if sampler:
            sampler.stop()
        if worker is not None:
            stop_worker(worker)
        if problems and log.exists():
            print(f"\n--- worker log tail ({log}) ---\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
        discard(app, db_url)
        _forget_queue(args.broker, queue)
        shutil.rmtree(workdir, ignore_errors=True)
    if problems:
        print("\nFAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
    else:
        print("\nOK: every run succeeded and every count matched")
    paging_status = 0 if args.skip_paging else _paging(args.db_server)
    return 1 if problems else paging_status


def _paging(db_server: str) -> int:
    from bench import paging

    print("\nAPI paging bench (python -m bench.paging; skip with --skip-paging)", flush=True)
    return paging.main(["--db-server", db_server])


def _profile(app: Any) -> None:
    from kasparro.db import db
    from bench.profile import profile_stages

    with app.app_context():
        tables = [t.name for t in db.metadata.sorted_tables if t.name != "alembic_version"]
        db.session.execute(text("TRUNCATE " + ", ".join(tables) + " RESTART IDENTITY CASCADE"))
        db.session.commit()
    print("\nProfile: the same file, stages run in-process under cProfile on emptied tables")
    profile_stages(app, SOURCE)


def _forget_queue(broker: str, queue: str) -> None:
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
    except Exception:  # noqa: BLE001
        pass


if __name__ == "__main__":
    sys.exit(main())
