"""Serve the raw layer of files: one line of a raw chunk exactly as received, GET /raw/chunks/<id>/lines/<line>.

A quote read from a file names its chunk and line (`raw_chunk_id`, `raw_line` in /data); this is
where that lineage leads. Rejected lines are also raw records, shown with their reasons by /rejects.

The line is cut out by PostgreSQL (`split_part`), so a request moves one line to the API, never the chunk
(a chunk is up to its byte budget; splitting it in Python cost the chunk twice over per request).
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from kasparro.api.auth import read_access
from kasparro.api.base import Blueprint
from kasparro.api.envelope import single
from kasparro.api.errors import ApiError
from kasparro.api.params import NoParams
from kasparro.api.schemas import RawLineSchema, envelope
from kasparro.api.summaries import MAX_ID
from kasparro.db import db
from kasparro.models import RawChunk

blp = Blueprint("raw", __name__, description="The raw layer of files: lines exactly as received.")


@blp.route("/raw/chunks/<int:chunk_id>/lines/<int:line>")
@read_access
@blp.arguments(NoParams, location="query")
@blp.response(200, envelope(RawLineSchema, "RawLineResponse"))
@blp.errors(400, 401, 404)
def get_raw_line(_: dict[str, Any], chunk_id: int, line: int) -> dict[str, Any]:
    """Show one line of a file's raw chunk, with the header it was read under."""
    chunk = db.session.execute(
        select(RawChunk.id, RawChunk.source, RawChunk.file, RawChunk.header, RawChunk.first_line, RawChunk.records,
               RawChunk.byte_start, RawChunk.sha256, RawChunk.received_at).where(RawChunk.id == chunk_id)
    ).one_or_none() if 0 < chunk_id <= MAX_ID else None
    if chunk is None:
        raise ApiError(404, "not_found", f"no raw chunk {chunk_id}")
    if not chunk.first_line <= line < chunk.first_line + chunk.records:
        raise ApiError(404, "not_found", f"raw chunk {chunk_id} holds lines {chunk.first_line} to"
                                         f" {chunk.first_line + chunk.records - 1}, not {line}")
    text = db.session.execute(select(_line(line - chunk.first_line + 1)).where(RawChunk.id == chunk_id)
                              ).scalar_one().removesuffix("\r")
    return single({"source": chunk.source, "file": chunk.file, "chunk_id": chunk.id, "line": line,
                   "header": chunk.header.decode("utf-8-sig").rstrip("\r\n"), "text": text,
                   "byte_start": chunk.byte_start, "sha256": chunk.sha256.hex(), "received_at": chunk.received_at})


def _line(number: int) -> Any:
    """Select the `number`th line (from 1) of a chunk's data, without its newline."""
    # A chunk is complete ASCII lines, one record each (see CsvSource.chunks), so it is valid UTF-8 text.
    return func.split_part(func.convert_from(RawChunk.data, "UTF8"), "\n", number)
