"""Run the spike's SQL-native path over a file's chunks, timing each statement (see bench/spike.py)."""
from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2.extensions import connection as Connection
from sqlalchemy.engine import make_url

from bench import spike_sql as sql
from bench.procs import cpu_seconds

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
