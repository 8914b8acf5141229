"""`python -m bench.spike`: time a SQL-native path for CSV files, step by step, against a plain COPY of the same file.

The candidate path (issue 11, see bench/README.md "Spike: a SQL-native path for
files"): keep the file's bytes as received in chunks of N lines, let
PostgreSQL's COPY parse each chunk, validate and cast in one set-based
statement, resolve identities per distinct id, upsert, and move the
checkpoint, one transaction per chunk. No product code changes; the spike's
tables sit beside the migrated schema on a throwaway database.

For each batch size, a step pass times every statement (the path's own and,
marked "(cmp)", the alternatives it is compared with), then end-to-end
passes run the path alone on emptied tables: as specified and lean, in one
session and in two. Each figure is wall seconds, the backends' CPU seconds
(from /proc), and wall as a ratio to the COPY baseline measured in the same
run. The statements are in bench/spike_sql.py, the per-chunk steps in
bench/spike_path.py.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ["ENV_FILE"] = ""  # the bench never reads a developer's .env

from psycopg2.extensions import connection as Connection

from bench import data
from bench import spike_sql as sql
from bench.database import build_app, discard
from bench.spike_path import (
    AS_SPECIFIED,
    LEAN,
    PATH_STEPS,
    Choice,
    Meter,
    Totals,
    connect,
    run_pass,
)
from kasparro.config import normalise_database_url


def copy_baseline(conn: Connection, backend: int, path: Path, rows: int, repeats: int) -> tuple[float, float]:
    """Time the bench's plain COPY of the file (bench/scenario.py); return median (wall, backend CPU)."""
    runs = []
    for _ in range(repeats):
        with conn.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS bench_copy")
            cursor.execute("CREATE TABLE bench_copy (currency text, date date, open numeric, high numeric,"
                           " low numeric, close numeric, volume numeric, market_cap numeric)")
            conn.commit()
            meter = Meter(backend)
            with meter.step("copy"), open(path, encoding="utf-8") as handle:
                cursor.copy_expert("COPY bench_copy FROM STDIN (FORMAT csv, HEADER)", handle)
                conn.commit()
            cursor.execute("SELECT count(*) FROM bench_copy")
            if cursor.fetchone()[0] != rows:
                raise RuntimeError("baseline COPY lost rows")
            cursor.execute("DROP TABLE bench_copy")
            conn.commit()
        runs.append((meter.wall["copy"], meter.cpu["copy"]))
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def reset(conn: Connection) -> None:
    """Empty the spike's tables (and the assets it created) and vacuum, so each pass starts alike."""
    with conn.cursor() as cursor:
        cursor.execute("TRUNCATE market_quotes, raw_records, raw_batches CASCADE")
        for statement in sql.RESET:
            cursor.execute(statement)
    conn.commit()
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    conn.autocommit = False


def _row(label: str, wall: float, cpu: float, copy_s: float) -> str:
    return f"  {label:<46} {wall:9.2f} {cpu:9.2f} {wall / copy_s:8.2f}x"


def print_steps(meter: Meter, copy_s: float, size: int) -> None:
    """Print each step's seconds, backend CPU and ratio to COPY; the path's steps first, with their sum."""
    print(f"\nstep pass, batch {size:,} lines: {'seconds':>24} {'CPU s':>9} {'vs COPY':>9}")
    for label in PATH_STEPS:
        print(_row(label, meter.wall.get(label, 0.0), meter.cpu.get(label, 0.0), copy_s))
    print(_row("= the path's steps", sum(meter.wall.get(s, 0.0) for s in PATH_STEPS),
               sum(meter.cpu.get(s, 0.0) for s in PATH_STEPS), copy_s))
    for label in meter.wall:
        if label not in PATH_STEPS:
            print(_row(label, meter.wall[label], meter.cpu[label], copy_s))


def check(totals: Totals, rows: int, label: str) -> list[str]:
    """Return what is wrong with a pass's counts: every row valid, inserted once, none a repeat."""
    expected = (rows, 0, rows, 0)
    got = (totals.valid, totals.rejected, totals.inserted, totals.duplicates)
    return [] if got == expected else [f"{label}: valid/rejected/inserted/duplicates {got}, expected {expected}"]


def end_to_end(conn: Connection, backend: int, path: Path, size: int, choice: Choice, copy_s: float) -> Totals:
    """Run the path alone on emptied tables and print its wall time, ratio to COPY and CPU."""
    reset(conn)
    meter = Meter(backend)
    wall = time.perf_counter()
    totals = run_pass(conn, meter, path, size, choice, comparisons=False)
    wall = time.perf_counter() - wall
    backend_cpu = sum(meter.cpu.values())
    print(f"end to end, batch {size:,}, {choice.label}: {wall:.2f} s wall ({wall / copy_s:.1f}x COPY),"
          f" backend CPU {backend_cpu:.2f} s + client CPU {totals.client_cpu:.2f} s"
          f" = {backend_cpu + totals.client_cpu:.2f} s", flush=True)
    return totals


def in_sessions(conn: Connection, db_url: str, path: Path, size: int, choice: Choice, copy_s: float) -> Totals:
    """Run the path in two sessions at once, alternate chunks each, and print its wall time and CPU.

    Only sound here because no key of the bench file is in two chunks: in general the
    upserts of a source must stay in chunk order, since the last line of a key wins.
    """
    reset(conn)
    sessions = [connect(db_url) for _ in range(2)]
    parts: list[Totals] = [Totals(), Totals()]
    meters = [Meter(backend) for _, backend in sessions]

    def work(k: int) -> None:
        parts[k] = run_pass(sessions[k][0], meters[k], path, size, choice, comparisons=False, share=(k, 2))

    wall, client = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall, client = time.perf_counter() - wall, time.process_time() - client
    for session, _ in sessions:
        session.close()
    backend_cpu = sum(sum(m.cpu.values()) for m in meters)
    print(f"end to end, batch {size:,}, {choice.label}, 2 sessions: {wall:.2f} s wall ({wall / copy_s:.1f}x COPY),"
          f" backend CPU {backend_cpu:.2f} s + client CPU {client:.2f} s = {backend_cpu + client:.2f} s", flush=True)
    return Totals(*(sum(getattr(p, name) for p in parts) for name in ("valid", "rejected", "inserted", "duplicates")))


def run_size(conn: Connection, backend: int, db_url: str, path: Path, rows: int, size: int,
             copy_s: float) -> list[str]:
    """Run the step pass, then each end-to-end pass, for one batch size; return any problems."""
    reset(conn)
    meter = Meter(backend)
    problems = check(run_pass(conn, meter, path, size, AS_SPECIFIED, comparisons=True), rows, f"steps {size}")
    print_steps(meter, copy_s, size)
    for choice in (AS_SPECIFIED, LEAN):
        problems += check(end_to_end(conn, backend, path, size, choice, copy_s), rows, f"{choice.label} {size}")
    for choice in (AS_SPECIFIED, LEAN):
        problems += check(in_sessions(conn, db_url, path, size, choice, copy_s), rows, f"{choice.label} x2 {size}")
    return problems


def run(db_url: str, rows: int, sizes: list[int], copies: int, workdir: Path) -> list[str]:
    """Write the bench file, measure COPY, then each batch size; return any problems."""
    path = workdir / f"bench-{rows}.csv"
    data.write(path, rows)
    conn, backend = connect(db_url)
    try:
        with conn.cursor() as cursor:
            for statement in sql.SETUP:
                cursor.execute(statement)
        conn.commit()
        copy_s, copy_cpu = copy_baseline(conn, backend, path, rows, copies)
        print(f"{rows:,} rows, {path.stat().st_size / 2**20:.1f} MiB; baseline COPY {copy_s:.2f} s wall,"
              f" {copy_cpu:.2f} s backend CPU (median of {copies})", flush=True)
        return [p for size in sizes for p in run_size(conn, backend, db_url, path, rows, size, copy_s)]
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.spike", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the bench file (default 1000000)")
    parser.add_argument("--batch-sizes", default="5000,50000", help="lines per chunk, comma-separated")
    parser.add_argument("--copies", type=int, default=3, help="baseline COPY repetitions; the median counts")
    parser.add_argument("--db-server", default=os.environ.get("BENCH_DATABASE_SERVER",
                                                              "postgresql+psycopg2://postgres@127.0.0.1:5432"))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, _: (_ for _ in ()).throw(KeyboardInterrupt(signum)))
    db_url = f"{normalise_database_url(args.db_server).rstrip('/')}/kasparro_spike_{os.getpid()}"
    app, problems = None, ["interrupted"]
    with tempfile.TemporaryDirectory(prefix="kasparro-spike-") as workdir:
        try:
            app = build_app(db_url, {"ENABLED_SOURCES": [], "OFFLINE": True, "LOG_LEVEL": "WARNING"})
            sizes = [int(s) for s in args.batch_sizes.split(",")]
            problems = run(db_url, args.rows, sizes, args.copies, Path(workdir))
        except KeyboardInterrupt:
            print("\ninterrupted; cleaning up", file=sys.stderr)
        finally:
            discard(app, db_url)
    print("\nOK: every pass kept every row once" if not problems else "\nFAILED:\n  " + "\n  ".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
