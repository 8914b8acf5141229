"""Read one raw CSV chunk both ways: PostgreSQL's fast path and the CSV source's careful path in Python.

Shared by the tests that hold the two together (test_chunk_agreement.py, test_chunk_dates.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text

from kasparro.db import db
from kasparro.pipeline import chunk_sql, chunks
from kasparro.pipeline.extract import payload_json
from kasparro.pipeline.transform import validate_batch
from kasparro.sources import SourceContext
from kasparro.sources.base import Chunk, RequestStats
from kasparro.sources.csv_file import CsvSource

COLUMNS = {"source_asset_id": "coin", "symbol": "ticker", "observed_at": "day", "price_usd": "close",
           "market_cap_usd": "cap", "volume_24h_usd": "volume", "percent_change_24h": "change"}
HEADER = ["coin", "ticker", "day", "close", "cap", "volume", "change", "note"]
TYPED = ("sid", "symbol", "name", "observed_at", "price_usd", "market_cap_usd", "volume_24h_usd",
         "percent_change_24h")


def csv_source(tmp_path: Path, date_format: str | None = "%Y-%m-%d") -> CsvSource:
    """Return a CSV source over tmp_path/q.csv with COLUMNS mapped and, unless None, `date_format`."""
    spec = {"kind": "csv", "path": str(tmp_path / "q.csv"), "columns": COLUMNS, "settle_seconds": 0}
    if date_format:
        spec["date_format"] = date_format
    return CsvSource("q", spec, SourceContext(secrets={}, base_dir=tmp_path, stats=RequestStats()))


def body(lines: list[list[str]]) -> str:
    """Return the file's text after its header: one comma-joined line per row."""
    return "".join(",".join(cells) + "\n" for cells in lines)


def first_chunk(source: CsvSource, lines: list[list[str]]) -> Chunk | None:
    """Write the rows under HEADER and return the source's first chunk, or None if it starts with a record."""
    source.path.write_text(",".join(HEADER) + "\n" + body(lines))
    first = next(iter(source.chunks(None, 1000)), None)
    return first if isinstance(first, Chunk) else None


@dataclass(frozen=True)
class Decided:
    """What PostgreSQL made of a chunk it decided."""

    typed: dict[int, tuple[Any, ...]]  # line -> the quote's values
    doubtful: list[int]  # lines left to Python
    refused: dict[int, tuple[str, dict[str, Any]]]  # line -> (its payload's JSON, its reason), worded by PostgreSQL


def fast(source: CsvSource, chunk: Chunk) -> Decided | None:
    """Run PostgreSQL's part of the fast path on the chunk, or return None if it declined the chunk."""
    plan = chunk_sql.plan(source.header_names(chunk.header), source.columns, source.date_format, source.delimiter)
    assert plan is not None
    try:
        typed = chunks._parse_and_type(db.session, chunk, plan)
        if typed is None:
            return None
        found = db.session.execute(text(f"SELECT line, {', '.join(TYPED)} FROM chunk_typed")).all()
        refused = []
        if typed.refused:  # each with the reason the statement keeping it gives it
            cursor = db.session.connection().connection.cursor()
            cursor.execute(f"SELECT line, r.payload, {plan.refused_reason} FROM chunk_refused r,"
                           " LATERAL (SELECT CAST(r.payload AS jsonb) AS payload) AS kept", {})
            refused = cursor.fetchall()
        assert len(refused) == typed.refused
        return Decided({row[0]: tuple(row[1:]) for row in found}, typed.doubtful,
                       {line: (payload, reason) for line, payload, reason in refused})
    finally:
        db.session.rollback()


def received(source: CsvSource, chunk: Chunk) -> dict[int, str]:
    """Each line's payload as the raw layer keeps it (its canonical JSON), read by the CSV source in Python."""
    return {line: payload_json(item.payload)
            for line, item in source.chunk_items(chunk.header, chunk.data, chunk.first_line, chunk.byte_start)}


def careful(source: CsvSource, chunk: Chunk) -> tuple[dict[int, tuple[Any, ...]], dict[int, Any]]:
    """Read the chunk the careful way: the CSV source's parser and validation in Python; quotes and rejects."""
    items = source.chunk_items(chunk.header, chunk.data, chunk.first_line, chunk.byte_start)
    # A line repeating an earlier one byte for byte is loaded once (the first).
    outcome = validate_batch(source, [(line, item.payload) for line, item in items if line not in chunk.repeats])
    quotes = {line: (q["source_asset_id"], q.get("symbol"), q.get("name"), q["observed_at"], q["price_usd"],
                     q["market_cap_usd"], q["volume_24h_usd"], q["percent_change_24h"]) for line, q in outcome.quotes}
    return quotes, dict(outcome.rejects)
