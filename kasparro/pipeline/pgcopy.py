"""Stream rows into PostgreSQL with COPY through the session's own connection and transaction."""
from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.orm import Session

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def encode_value(value: Any) -> str:
    """Render one value in COPY text format; None is NULL."""
    if value is None:
        return "\\N"
    return str(value).translate(_ESCAPES)


def copy_rows(session: Session, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """COPY `rows` into `table` inside the session's current transaction."""
    buffer = io.StringIO()
    for row in rows:
        buffer.write("\t".join(encode_value(v) for v in row))
        buffer.write("\n")
    buffer.seek(0)
    cursor = session.connection().connection.cursor()
    try:
        cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", buffer)
    finally:
        cursor.close()
