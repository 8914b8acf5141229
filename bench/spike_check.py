"""`python -m bench.spike_check`: check the spike's rejects, reasons and line numbers on a crafted file.

Runs the SQL-native path of bench/spike_path.py in chunks of 4 lines over 14
rows (some invalid in each way the rules know), on a throwaway database built
by the migrations. It compares what was kept and rejected, line by line,
with the field named here, and checks that `validation.load_quote` keeps or
rejects each row the same way. Exit status 1 on any difference.
"""
from __future__ import annotations

import csv
import os
import sys
import tempfile
from pathlib import Path

os.environ["ENV_FILE"] = ""  # the bench never reads a developer's .env

from bench import spike_sql as sql
from bench.database import build_app, discard
from bench.spike_path import AS_SPECIFIED, Meter, connect, run_pass
from kasparro.config import normalise_database_url
from kasparro.pipeline.validation import load_quote
from kasparro.sources.filedrop import parse_date

HEADER = "currency,date,open,high,low,close,volume,market_cap"
# (row, which field the reason names, or None if the row is kept); the header is line 1.
ROWS = (
    ("bitcoin,2019-01-05,1,1,1,3500.5,100,200", None),
    (",2019-01-05,1,1,1,3500.5,100,200", "source_asset_id"),
    ("bitcoin,2019-02-30,1,1,1,1,1,1", "observed_at"),
    ("bitcoin,2019-13-01,1,1,1,1,1,1", "observed_at"),
    ("bitcoin,2008-12-31,1,1,1,1,1,1", "observed_at"),
    ("bitcoin,2999-01-01,1,1,1,1,1,1", "observed_at"),
    ("bitcoin,2019-01-06,1,1,1,-2,1,1", "price_usd"),
    ("bitcoin,2019-01-07,1,1,1,abc,1,1", "price_usd"),
    ("bitcoin,2019-01-08,1,1,1,NaN,1,1", "price_usd"),
    ('"eth,quoted",2019-1-9,1,1,1,5,1,1', None),
    ("bitcoin,2019-01-10,1,1,1,5,1,1e17", "market_cap_usd"),
    ("bitcoin,2019-01-11,1,1,1,5,,", None),
    ("bitcoin,Jan 5 2019,1,1,1,5,1,1", "observed_at"),  # PostgreSQL reads it; %Y-%m-%d does not
    ("bitcoin,2019-01-05,1,1,1,3500.5,100,200", None),  # a repeat of line 2: kept once, one duplicate
)


def python_keeps(row: str) -> bool:
    """Decide a row the product's way: CsvFile.to_unified's mapping, then load_quote."""
    from marshmallow import ValidationError

    cells = [cell.strip() or None for cell in next(csv.reader([row]))]
    day = parse_date(cells[1], "%Y-%m-%d") if cells[1] else None
    fields = {"source_asset_id": cells[0], "observed_at": day, "price_usd": cells[5],
              "volume_24h_usd": cells[6], "market_cap_usd": cells[7]}
    try:
        return day is not None and bool(load_quote(fields))
    except ValidationError:
        return False


def outcome(db_url: str, path: Path) -> tuple[dict[int, str | None], int]:
    """Run the path over `path`; return {line: field named by its reason, or None if kept} and duplicates."""
    conn, backend = connect(db_url)
    try:
        with conn.cursor() as cursor:
            for statement in sql.SETUP:
                cursor.execute(statement)
        conn.commit()
        totals = run_pass(conn, Meter(backend), path, 4, AS_SPECIFIED, comparisons=False)
        with conn.cursor() as cursor:
            cursor.execute("SELECT line, (SELECT min(k) FROM jsonb_object_keys(reason) k) FROM chunk_rejects")
            seen: dict[int, str | None] = dict(cursor.fetchall())
            cursor.execute("SELECT line FROM quotes_by_chunk")
            seen.update({line: None for (line,) in cursor.fetchall()})
    finally:
        conn.close()
    return seen, totals.duplicates


def main() -> int:
    db_url = f"{normalise_database_url('postgresql://postgres@127.0.0.1:5432')}/kasparro_spike_check_{os.getpid()}"
    expected = {line: reason for line, (_, reason) in enumerate(ROWS, start=2)}
    del expected[len(ROWS) + 1]  # the repeat is not stored again: line 2 holds its key
    app = None
    with tempfile.TemporaryDirectory(prefix="kasparro-spike-check-") as workdir:
        path = Path(workdir) / "crafted.csv"
        path.write_text("\n".join([HEADER, *(row for row, _ in ROWS)]) + "\n")
        try:
            app = build_app(db_url, {"ENABLED_SOURCES": [], "OFFLINE": True, "LOG_LEVEL": "WARNING"})
            seen, duplicates = outcome(db_url, path)
        finally:
            discard(app, db_url)
    wrong = {line: (seen.get(line), reason) for line, reason in expected.items() if seen.get(line, "-") != reason}
    disagree = [row for row, reason in ROWS if python_keeps(row) != (reason is None)]
    print(f"{len(expected)} lines, {duplicates} duplicate(s); wrong (seen, expected): {wrong or 'none'};"
          f" rows load_quote decides otherwise: {disagree or 'none'}")
    return 0 if not wrong and not disagree and duplicates == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
