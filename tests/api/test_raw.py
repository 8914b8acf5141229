"""GET /raw/chunks/<id>/lines/<n>: one line moves to the API, whatever the size of its chunk or the id asked."""
from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from kasparro.db import db
from kasparro.models import RawChunk
from tests.bounded import MIB, run_bounded
from tests.conftest import test_config as settings_of

HEADER = b"currency,date,close,volume,market_cap\n"
# What a chunk may hold (CsvSource.chunks): printable ASCII without quotes, a line possibly ending in CR.
plain_line = st.builds(lambda body, cr: body + cr, st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e,
                                                                         blacklist_characters='"'), max_size=40),
                       st.sampled_from(["", "\r"]))


def store_chunk(lines: list[bytes], first_line: int = 2) -> int:
    """Keep `lines` as a raw chunk of a file and return its id."""
    data = b"".join(line + b"\n" for line in lines)
    chunk = RawChunk(source="big", run_id=1, file="big.csv", header=HEADER, data=data, first_line=first_line,
                     byte_start=len(HEADER), byte_end=len(HEADER) + len(data), records=len(lines), repeats=[],
                     sha256=hashlib.sha256(HEADER + data + uuid.uuid4().bytes).digest())  # unique per test
    db.session.add(chunk)
    db.session.commit()
    return chunk.id


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(plain_line, min_size=1, max_size=30), data=st.data())
def test_any_line_is_shown_exactly_as_received(app: Flask, client: FlaskClient, lines: list[str],
                                               data: st.DataObject) -> None:
    with app.app_context():
        chunk_id = store_chunk([line.encode() for line in lines], first_line=7)
    index = data.draw(st.integers(0, len(lines) - 1))

    shown = client.get(f"/raw/chunks/{chunk_id}/lines/{7 + index}").get_json()["data"]

    assert shown["text"] == lines[index].removesuffix("\r")
    assert (shown["header"], shown["line"], shown["chunk_id"]) == (HEADER.decode().strip(), 7 + index, chunk_id)


def test_a_line_of_a_large_chunk_costs_the_api_the_line_not_the_chunk(app: Flask, sources_file: Path) -> None:
    with app.app_context():
        chunk_id = store_chunk([f"coin{n},2024-01-01,{n}.5,1,2".encode() for n in range(400_000)])  # 12 MB

    # Served in a child and measured by its resident peak, which sees libpq's buffers as well as Python's.
    served = run_bounded("tests.api.raw_reader:line_cost", settings_of(sources_file), chunk_id, 2 + 399_999, 2)

    assert served.kind == "returned", str(served)
    text, grew = served.value
    assert text == "coin399999,2024-01-01,399999.5,1,2"
    assert grew < 2 * MIB, f"grew {grew / MIB:.1f} MiB"  # fetching the chunk into the API grows it by 12 MiB or more


@pytest.mark.parametrize("chunk_id", ["0", str(2**63), "99999999999999999999999", str(2**64 + 5)])
def test_a_chunk_id_past_the_ids_postgresql_can_hold_is_a_json_404_without_a_query(app: Flask, client: FlaskClient,
                                                                                   chunk_id: str) -> None:
    sent: list[str] = []

    def keep(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        sent.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", keep)
    try:
        response = client.get(f"/raw/chunks/{chunk_id}/lines/2")
    finally:
        event.remove(engine, "before_cursor_execute", keep)

    assert response.status_code == 404
    assert response.get_json()["error"] == {"code": "not_found", "message": f"no raw chunk {chunk_id}"}
    # Sent on, such an id is a numeric PostgreSQL compares with every row's id: a scan past the index.
    assert not [statement for statement in sent if "raw_chunks" in statement]
