"""Read a source from its checkpoint and keep every record as received, one batch per page."""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, cast

from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kasparro.models import Checkpoint, RawBatch, SourceRun
from kasparro.pipeline import chunks, durability, leases, runs
from kasparro.pipeline.faults import Fault
from kasparro.pipeline.faults import check as check_fault
from kasparro.pipeline.pgcopy import copy_rows
from kasparro.sources.base import (DEFAULT_BATCH_BYTES, UNREADABLE, Chunk, Page, RawItem, RequestStats, Source,
                                   Unstorable, canonical_json, evidence)
from kasparro.sources.window import Window, Windowed


def content_hash(text: str) -> str:
    """Hash a payload's canonical JSON, so the same record received twice is recognised."""
    return hashlib.sha256(text.encode()).hexdigest()


def payload_json(payload: Mapping[str, Any]) -> str:
    """Serialise a payload for JSONB (NUL becomes U+FFFD); raise Unstorable for what JSONB refuses."""
    return canonical_json(payload)


def resume_cursor(session: Session, source_run: SourceRun,
                  from_checkpoint: bool = True) -> tuple[dict[str, Any] | None, int]:
    """Return where extraction continues: after this run's last batch, else the checkpoint (if asked)."""
    last = session.execute(
        select(RawBatch).where(RawBatch.run_source_id == source_run.id).order_by(RawBatch.seq.desc()).limit(1)
    ).scalar()
    if last is not None:
        return last.cursor_after, last.seq + 1
    checkpoint = session.get(Checkpoint, source_run.source) if from_checkpoint else None
    return (checkpoint.cursor if checkpoint else None), 1


# DISTINCT ON: a page may repeat a payload, and ON CONFLICT may touch a row only once
# per statement; the first copy is kept, and ids follow the page's order (`ord`) so
# the last row of a key still wins at load. A payload seen before is moved into this
# batch only if an earlier, failed run received it and never loaded it, so those
# records are picked up again instead of being lost; a repeat within this run, or of
# a loaded record, stays where it is and counts as a duplicate.
_KEEP_RAW = text(
    """
    INSERT INTO raw_records (source, run_id, batch_id, position, payload, content_hash)
    SELECT :source, :run_id, :batch_id, position, payload, content_hash
    FROM (SELECT DISTINCT ON (content_hash) * FROM raw_in ORDER BY content_hash, ord) AS firsts
    ORDER BY ord
    ON CONFLICT (source, content_hash) DO UPDATE
        SET batch_id = EXCLUDED.batch_id, run_id = EXCLUDED.run_id, position = EXCLUDED.position,
            payload = EXCLUDED.payload
        WHERE (SELECT b.state <> 'loaded' AND b.run_source_id <> :run_source_id
               FROM raw_batches b WHERE b.id = raw_records.batch_id)
    """
)


def _raw_rows(items: list[RawItem]) -> Iterator[tuple[int, str, str, str]]:
    """Yield (order, position, payload JSON, content hash); an unreadable item keeps its reason in the payload."""
    for order, item in enumerate(items):
        received, stored = stored_json(item)
        yield order, item.position, stored, content_hash(received)


def stored_json(item: RawItem) -> tuple[str, str]:
    """Return the JSON an item was received as (what its hash is of) and the JSON the raw layer keeps.

    A payload JSONB cannot hold (a lone surrogate, an infinite number) is kept as its text, to be
    rejected with the reason and position: one such record never fails the batch it came in.
    """
    try:
        received = payload_json(item.payload)
    except Unstorable as exc:
        # The hash is of what was received, so the same bad bytes twice are one record, wherever they were.
        received = exc.text or f"{item.position} {exc}"
        reason = f"{item.position} {exc}" if item.error is None else item.error
        return received, canonical_json({**evidence(exc.text), UNREADABLE: reason}, lenient=True)
    if item.error is None:
        return received, received
    return received, canonical_json({**item.payload, UNREADABLE: item.error}, lenient=True)


def store_page(session: Session, source_run: SourceRun, seq: int, page: Page) -> RawBatch:
    """Write one page as a raw batch; a payload already received is kept once and counted as a duplicate."""
    durability.defer_flush(session)
    batch = RawBatch(run_source_id=source_run.id, source=source_run.source, seq=seq,
                     cursor_after=page.cursor, received=len(page.items))
    session.add(batch)
    session.flush()
    session.execute(text("CREATE TEMP TABLE IF NOT EXISTS raw_in (ord int, position text, payload jsonb,"
                         " content_hash text) ON COMMIT DELETE ROWS"))
    copy_rows(session, "raw_in", ("ord", "position", "payload", "content_hash"), _raw_rows(page.items))
    result = session.execute(_KEEP_RAW, {"source": source_run.source, "run_id": source_run.run_id,
                                         "batch_id": batch.id, "run_source_id": source_run.id})
    batch.new_records = result.rowcount
    runs.add_counts(session, source_run, page.progress, extracted=batch.received,
                    duplicates=batch.received - batch.new_records)
    return batch


def record_requests(session: Session, source_run: SourceRun, stats: RequestStats) -> None:
    """Add the source's request evidence gathered since the last call."""
    taken = stats.take()
    runs.add_counts(session, source_run, requests=taken.requests, retries=taken.retries,
                    throttled=taken.throttled, wait_seconds=taken.wait_seconds, waits=len(taken.waits),
                    longest_wait_seconds=max(taken.waits, default=0))


def _payload_size(payload: Mapping[str, Any]) -> int:
    try:
        return len(payload_json(payload))
    except Unstorable as exc:  # stored as a reject with its evidence; sized by that
        return len(exc.text)


def _cut(items: list[RawItem], max_bytes: int) -> list[list[RawItem]]:
    """Split items into runs whose payloads stay within `max_bytes`; a payload over it alone is a run of its own."""
    parts: list[list[RawItem]] = [[]]
    held = 0
    for item in items:
        size = _payload_size(item.payload)
        if parts[-1] and held + size > max_bytes:
            parts.append([])
            held = 0
        parts[-1].append(item)
        held += size
    return parts


def within_budget(pages: Iterable[Page | Chunk], max_bytes: int,
                  cursor: dict[str, Any] | None) -> Iterator[Page | Chunk]:
    """Yield the pages, cutting one whose payloads pass `max_bytes` into batches that do not.

    A source that cannot cut its own pages by bytes (an API's page is one answer) is bounded here.
    Each part but the last carries the cursor from before the page, so a run stopped between them
    reads the page again from its start: what an earlier part received counts as a duplicate of
    this run, never a second load, and nothing after it is skipped.
    """
    before = cursor
    for page in pages:
        if isinstance(page, Page) and len(page.items) > 1:
            parts = _cut(page.items, max_bytes)
            for part in parts[:-1]:
                yield Page(part, before)  # type: ignore[arg-type]  # None: the source's own start
            page = Page(parts[-1], page.cursor, page.progress)
        yield page
        before = page.cursor


def extract(session: Session, source_run: SourceRun, source: Source, stats: RequestStats, batch_size: int,
            lease: leases.Terms, faults: tuple[Fault, ...] = (),
            on_batch: Callable[[RawBatch], None] | None = None, window: Window | None = None,
            batch_bytes: int = DEFAULT_BATCH_BYTES) -> int:
    """Extract everything new for a source, committing one batch per page; return batches written.

    The lease is renewed before each page, so a run that lost it stands down
    (SourceBusy) instead of writing beside the new holder. `on_batch` is called
    after each batch commits (the tasks use it to start transforming while
    extraction goes on). If the same message is being worked on by another
    delivery, the later one to write a batch number stands down: the other
    delivery finishes the extract. With a `window` (a backfill), the source reads that
    window from its start instead of reading on from the checkpoint. A batch holds at most
    `batch_size` records and `batch_bytes` bytes: a file cuts its own pages and chunks by
    bytes (it knows where each record lies); any other page is cut here (`within_budget`).
    """
    cursor, seq = resume_cursor(session, source_run, from_checkpoint=window is None)
    budget = {"max_bytes": batch_bytes} if getattr(source, "cuts_by_bytes", False) else {}
    pages: Iterator[Page | Chunk]
    if window is not None:
        pages = cast(Windowed, source).window_pages(window, cursor, batch_size, **budget)
    elif hasattr(source, "chunks"):  # a file: plain stretches are kept as raw chunks (pipeline/chunks.py)
        pages = source.chunks(cursor, batch_size, **budget)
    else:
        pages = source.pages(cursor, batch_size, **budget)
    written = records = 0
    for page in within_budget(pages, batch_bytes, cursor):
        lease.take(session, source_run.source, source_run.run_id)
        try:
            batch = chunks.store_chunk(session, source_run, seq + written, page) if isinstance(page, Chunk) \
                else store_page(session, source_run, seq + written, page)
        except IntegrityError:
            session.rollback()
            return written
        record_requests(session, source_run, stats)
        session.commit()
        written, records = written + 1, records + batch.received
        check_fault(faults, source_run.source, "extract", records)
        if on_batch is not None:
            on_batch(batch)
    record_requests(session, source_run, stats)
    session.execute(update(SourceRun).where(SourceRun.id == source_run.id).values(extract_done=True))
    session.commit()
    return written
