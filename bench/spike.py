"""`python -m bench.spike`: time a SQL-native path for CSV files, step by step, against a plain COPY of the same file.

The candidate path (issue 11, see bench/README.md "Spike: a SQL-native path for
files"): keep the file's bytes as received in chunks of N lines, let
PostgreSQL's COPY parse each chunk, validate and cast in one set-based
statement, resolve identities per distinct id, upsert, and move the
checkpoint, one transaction per chunk. No product code changes; the spike's
tables sit beside the migrated schema on a throwaway database.

For each batch size, a step pass times every statement (the path's own and,
marked "(cmp)", the alternatives it is compared with), then an end-to-end
pass runs the path alone on emptied tables. Each figure is wall seconds,
the backend's CPU seconds (from /proc), and wall as a ratio to the COPY
baseline measured in the same run.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ["ENV_FILE"] = ""  # the bench never reads a developer's .env

import psycopg2
from psycopg2.extensions import connection as Connection
from sqlalchemy.engine import make_url

from bench import data
from bench import spike_sql as sql
from bench.database import build_app, discard
from bench.procs import cpu_seconds
from kasparro.config import normalise_database_url

SOURCE, RUN_ID = "bench_csv", 1
# Steps that belong to the candidate path; the rest are measured for comparison.
PATH_STEPS = ("1 raw chunk", "2 parse (COPY)", "3 validate + cast", "4 identity", "5 upsert + checkpoint",
              "6 dedup", "commit")


@dataclass(frozen=True)
class Choice:
    """How a path counts repeated lines and which quotes table it upserts into."""

    label: str
    dedup: str
    upsert: str


AS_SPECIFIED = Choice("md5 of every line kept, market_quotes' indexes and FK", sql.DEDUP_MD5, sql.UPSERT_BY_CHUNK)
LEAN = Choice("repeats counted within a chunk, no FK to assets", sql.DEDUP_IN_CHUNK, sql.UPSERT_NO_FK)


@dataclass(frozen=True)
class Chunk:
    """N lines of the file as received, with where they came from."""

    batch_no: int
    first_line: int
    byte_start: int
    byte_end: int
    data: bytes
    header: bool


@dataclass
class Meter:
    """Wall and backend CPU seconds per step, added up over chunks."""

    backend: int
    wall: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        """Time the statements run inside the block as `label`."""
        cpu, wall = cpu_seconds(self.backend) or 0.0, time.perf_counter()
        yield
        self.wall[label] = self.wall.get(label, 0.0) + time.perf_counter() - wall
        self.cpu[label] = self.cpu.get(label, 0.0) + (cpu_seconds(self.backend) or 0.0) - cpu


def chunks(path: Path, size: int) -> Iterator[Chunk]:
    """Cut the file into chunks of `size` lines; the first keeps the header line, as received."""
    with open(path, "rb") as handle:
        offset, line = 0, 1
        for batch_no in itertools.count(1):
            lines = list(itertools.islice(handle, size + (batch_no == 1)))
            if not lines:
                return
            body = b"".join(lines)
            yield Chunk(batch_no, line + (batch_no == 1), offset, offset + len(body), body, batch_no == 1)
            offset, line = offset + len(body), line + len(lines)


def connect(db_url: str) -> tuple[Connection, int]:
    """Open a psycopg2 connection with the spike's session tables; return it and its backend pid."""
    url = make_url(db_url)
    conn = psycopg2.connect(host=url.host, port=url.port, user=url.username, password=url.password,
                            dbname=url.database)
    with conn.cursor() as cursor:
        for statement in sql.SESSION:
            cursor.execute(statement)
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    conn.commit()
    return conn, backend


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


def _cursor_after(chunk: Chunk) -> str:
    return json.dumps({"offset": chunk.byte_end, "line": chunk.first_line + chunk.data.count(b"\n")})


def store_and_parse(cursor: Any, meter: Meter, chunk: Chunk) -> tuple[int | None, int]:
    """Keep the chunk's bytes as a raw chunk and COPY them into stage_rows; return (chunk id, rows staged).

    The chunk id is None if the same bytes were stored before: nothing is staged.
    """
    with meter.step("1 raw chunk"):
        cursor.execute(sql.INSERT_CHUNK, {
            "source": SOURCE, "batch_no": chunk.batch_no, "first_line": chunk.first_line,
            "byte_start": chunk.byte_start, "byte_end": chunk.byte_end,
            "sha256": hashlib.sha256(chunk.data).digest(), "data": psycopg2.Binary(chunk.data)})
        stored = cursor.fetchone()
    if stored is None:
        return None, 0  # these exact bytes were received before: every line in them is a duplicate
    chunk_id = stored[0]
    with meter.step("2 parse (COPY)"):
        cursor.execute(sql.RESET_LINES, {"first_line": chunk.first_line})
        statement = sql.COPY_CHUNK.format(columns=sql.STAGE_COLUMNS, header=", HEADER" if chunk.header else "")
        cursor.copy_expert(statement, _Reader(chunk.data))
    return chunk_id, cursor.rowcount


class _Reader:
    """A file-like view of bytes for copy_expert, without copying them into a BytesIO."""

    def __init__(self, payload: bytes) -> None:
        self.view, self.at = memoryview(payload), 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.view) if size < 0 else self.at + size
        piece, self.at = self.view[self.at:end], min(end, len(self.view))
        return bytes(piece)

    readline = read


def validate(cursor: Any, params: dict[str, Any], staged: int) -> tuple[int, int]:
    """Type the staged rows by the fast path if it keeps them all, else by the exact one; return (valid, rejected)."""
    cursor.execute("SAVEPOINT fast")
    try:
        cursor.execute(sql.VALIDATE_FAST, params)
        kept = cursor.rowcount
    except psycopg2.DataError:  # a cell no plain cast reads: the exact statement words why
        kept = -1
    if kept == staged:
        cursor.execute("RELEASE SAVEPOINT fast")
        return kept, 0
    cursor.execute("ROLLBACK TO SAVEPOINT fast")
    cursor.execute(sql.VALIDATE, params)
    return cursor.fetchone()


@dataclass
class Totals:
    """Rows the path saw, kept, rejected and counted as repeats, and its client's CPU seconds."""

    valid: int = 0
    rejected: int = 0
    inserted: int = 0
    duplicates: int = 0
    client_cpu: float = 0.0


def dedup(cursor: Any, choice: Choice, params: dict[str, Any], staged: int) -> int:
    """Count the staged lines received before (kept set) or repeated in the chunk; return that count."""
    cursor.execute(choice.dedup, params)
    return staged - cursor.rowcount if choice.dedup == sql.DEDUP_MD5 else cursor.fetchone()[0]


def validate_and_load(cursor: Any, meter: Meter, chunk: Chunk, ids: tuple[int, int], choice: Choice,
                      totals: Totals) -> None:
    """Validate, dedup, resolve and upsert the staged chunk `ids` = (chunk id, rows staged), adding to `totals`."""
    chunk_id, staged = ids
    params = {"source": SOURCE, "run_id": RUN_ID, "chunk_id": chunk_id, "cursor": _cursor_after(chunk)}
    with meter.step("3 validate + cast"):
        valid, rejected = validate(cursor, params, staged)
    with meter.step("6 dedup"):
        totals.duplicates += dedup(cursor, choice, params, staged)
    with meter.step("4 identity"):
        cursor.execute(sql.IDENTITY, params)
    with meter.step("5 upsert + checkpoint"):
        cursor.execute(choice.upsert, params)
        inserted, _updated = cursor.fetchone()
        cursor.execute(sql.CHECKPOINT, params)
    totals.valid, totals.rejected, totals.inserted = (totals.valid + valid, totals.rejected + rejected,
                                                      totals.inserted + inserted)


def compare(cursor: Any, meter: Meter, chunk: Chunk, chunk_id: int) -> None:
    """Time the alternatives the path is weighed against, on the same staged chunk."""
    params = {"source": SOURCE, "run_id": RUN_ID, "batch_no": chunk.batch_no, "cursor": _cursor_after(chunk),
              "chunk_id": chunk_id}
    with meter.step("3b cast only, no checks (cmp)"):
        cursor.execute(sql.CAST_ONLY)
    with meter.step("3c exact validation for every chunk (cmp)"):
        cursor.execute("SAVEPOINT exact")
        cursor.execute(sql.VALIDATE, params | {"chunk_id": 0})
        cursor.execute("ROLLBACK TO SAVEPOINT exact")
    with meter.step("4b alias join alone (cmp)"):
        cursor.execute(sql.JOIN_ONLY, params)
    with meter.step("6b md5 computed, not kept (cmp)"):
        cursor.execute(sql.HASH_ONLY)
    with meter.step("6c sha256 kept, unique (cmp)"):
        cursor.execute(sql.DEDUP_SHA256, params)
    with meter.step("6d md5 within the chunk only (cmp)"):
        cursor.execute(sql.DEDUP_IN_CHUNK)
    with meter.step("5d upsert, no asset FK (cmp)"):
        cursor.execute(sql.UPSERT_NO_FK, params)
    with meter.step("5e upsert, conflict key only (cmp)"):
        cursor.execute(sql.UPSERT_KEY_ONLY, params)
    with meter.step("5f update, then plain insert (cmp)"):
        cursor.execute(sql.UPDATE_THEN_INSERT, params)
    with meter.step("5b current shape: raw_records per line (cmp)"):
        cursor.execute(sql.RAW_BATCH, params)
        params["batch_id"] = cursor.fetchone()[0]
        cursor.execute(sql.RAW_RECORDS, params)
    with meter.step("5c current shape: upsert, raw FK (cmp)"):
        cursor.execute(sql.UPSERT_CURRENT, params)


def run_pass(conn: Connection, meter: Meter, path: Path, size: int, choice: Choice, comparisons: bool,
             share: tuple[int, int] = (0, 1)) -> Totals:
    """Run the file's chunks through the path (and the comparisons), one transaction per chunk.

    With `share` = (k, n), only every n-th chunk from the k-th: one of n sessions' part.
    """
    totals, client = Totals(), time.process_time()
    with conn.cursor() as cursor:
        for chunk in chunks(path, size):
            if (chunk.batch_no - 1) % share[1] != share[0]:
                continue
            chunk_id, staged = store_and_parse(cursor, meter, chunk)
            if chunk_id is None:
                conn.commit()
                continue
            validate_and_load(cursor, meter, chunk, (chunk_id, staged), choice, totals)
            if comparisons:
                compare(cursor, meter, chunk, chunk_id)
            with meter.step("commit"):
                conn.commit()
    totals.client_cpu = time.process_time() - client
    return totals


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
