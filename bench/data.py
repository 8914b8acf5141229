"""Build the bench CSV from the real data/csv/coins_daily_2019.csv.

The real file holds 30 days x 10 coins (300 rows, 5 of them deliberately
invalid). The bench file repeats its valid rows in blocks: block k is the
real file shifted back k * 30 days, so each block is another month of the
same coins' history. Dates stop short of the Bitcoin genesis block (the
validator rejects anything older), so after ~120 blocks the dates start over
and the coin ids get a suffix (`bitcoin-x1`, `bitcoin-x2`, ...): every
(coin, date) in the bench file is unique and every row is valid, so the
expected row count is exactly the number of rows written.
"""
from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE_FILE = ROOT / "data" / "csv" / "coins_daily_2019.csv"
HEADER = ["currency", "date", "open", "high", "low", "close", "volume", "market_cap"]
# A week of margin after the genesis block (2009-01-03), the validator's lower bound.
EARLIEST = date(2009, 1, 10)


def _valid(row: list[str]) -> tuple[str, date, list[str]] | None:
    if len(row) != len(HEADER):
        return None
    try:
        day = date.fromisoformat(row[1])
        numbers = [Decimal(v) for v in row[2:]]
    except (ValueError, InvalidOperation):
        return None
    if any(not n.is_finite() or n < 0 for n in numbers):
        return None
    return row[0], day, row[2:]


def valid_rows(path: Path = SOURCE_FILE) -> list[tuple[str, date, list[str]]]:
    """Return the real file's valid rows as (coin, date, numeric fields as text)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        if header != HEADER:
            raise SystemExit(f"{path}: unexpected header {header}")
        return [parsed for parsed in map(_valid, reader) if parsed is not None]


def lines(path: Path = SOURCE_FILE) -> Iterator[str]:
    """Yield bench CSV lines (no header) forever, block after block."""
    rows = valid_rows(path)
    first, last = min(r[1] for r in rows), max(r[1] for r in rows)
    span = (last - first).days + 1
    shifts = (first - EARLIEST).days // span + 1  # blocks per date cycle
    for block in itertools.count():
        cycle, shift = divmod(block, shifts)
        delta = timedelta(days=span * shift)
        suffix = f"-x{cycle}" if cycle else ""
        for coin, day, numbers in rows:
            yield f"{coin}{suffix},{(day - delta).isoformat()},{','.join(numbers)}\n"


def write(path: Path, rows: int, append_rows: int = 0) -> None:
    """Write `rows` bench rows with a header to `path`."""
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write(",".join(HEADER) + "\n")
        out.writelines(itertools.islice(lines(), rows))


def append(path: Path, start: int, count: int) -> None:
    """Append the `count` rows that follow the first `start` rows of the stream."""
    with open(path, "a", encoding="utf-8", newline="") as out:
        out.writelines(itertools.islice(lines(), start, start + count))


def describe() -> str:
    """One sentence saying where the bench data comes from."""
    rows = valid_rows()
    coins = len({r[0] for r in rows})
    return (f"derived from {SOURCE_FILE.relative_to(ROOT)}: its {len(rows)} valid rows ({coins} coins) repeated "
            f"in blocks shifted back 30 days each; ids get a -xN suffix once dates would pass 2009-01-10")
