"""Write the statements that parse, type and check a raw chunk inside PostgreSQL, for one file's mapping.

The rules are those of `validation.load_quote` for text cells, as `CsvSource.to_unified` hands them
over (stripped; an empty cell is missing), narrowed to what can be decided without doubt: a cell must
have a plain shape (a regular expression) before it is cast, and a cast that still fails raises. A
row outside those shapes is not kept: the caller reads that line the careful way, in Python, which
accepts it or words the reasons (pipeline/chunks.py). So this path only ever accepts rows that the Python
path accepts, with the same values (tests/pipeline/test_chunk_agreement.py holds the two together).

The statements go to psycopg2 directly (`%(name)s` parameters): SQLAlchemy's text() would take the
`:00` of a time literal for a parameter.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kasparro.pipeline.validation import EARLIEST, MAX_PRICE, MAX_TOTAL

# Shapes a cell must have to be cast here; a line with any other goes the careful way.
# What datetime.fromisoformat reads the same way PostgreSQL does: no hour 24, no leap second,
# at most microseconds, an offset only as Z or +HH:MM.
_ISO_NAIVE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?)?$"
_ISO_OFFSET = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?"
               r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$")
# Exactly four digits, two, two, dash-separated: the only cells where strptime("%Y-%m-%d") and PostgreSQL's
# date input agree. PostgreSQL also reads stray dashes ("2019--1-05" as 5 January, "01---01-05" as 1 January
# 2005), which strptime refuses. translate() maps every digit to 0, so one comparison checks the shape.
_DAY_SHAPE = "translate(observed_at, '0123456789', '0000000000') = '0000-00-00'"
# Date formats this path reads; a file with any other keeps the careful way for every chunk.
DATE_FORMATS = (None, "%Y-%m-%d")
# (unified field, low, high) of the numbers, as validation.py bounds them.
_NUMBERS = (("price_usd", 0, MAX_PRICE), ("market_cap_usd", 0, MAX_TOTAL), ("volume_24h_usd", 0, MAX_TOTAL),
            ("percent_change_24h", -100, 1_000_000))
_TEXTS = (("symbol", 40), ("name", 200))
NUMBER_FIELDS = tuple(name for name, _, _ in _NUMBERS)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class Plan:
    """The statements for one header under one mapping."""

    create_rows: str
    copy: str
    create_typed: str
    # Column name -> the number field it is mapped to.
    numbers: Mapping[str, str]


def plan(header: Sequence[str], columns: Mapping[str, str], date_format: str | None,
         delimiter: str) -> Plan | None:
    """Return the statements for chunks read under `header`, or None if this path cannot read them exactly."""
    if date_format not in DATE_FORMATS or delimiter in ("\\", '"', "\r", "\n") or len(delimiter) != 1:
        return None
    # dict(zip(header, values)) keeps the last of two columns with one name; so does this.
    index = {name: position for position, name in enumerate(header, 1)}
    if any(column not in index for column in columns.values()):
        return None  # a mapped column is missing: drift, which the careful way reports
    names = ", ".join(f"c{i}" for i in range(1, len(header) + 1))
    # Level 1: each mapped cell once, as str.strip() leaves an ASCII cell (a chunk holds no other
    # control bytes); '' is missing.
    cells = ", ".join(f"nullif(btrim(c{index[column]}, E' \\t'), '') AS {field}" for field, column in columns.items())
    # Level 2: casts, each behind a cheap shape check (for a date, translate(), a C loop; for a number, a
    # cached regular expression, measured a little cheaper than an ltrim there).
    # A malformed cell that passes it makes the cast raise, which sends the chunk the careful way: never
    # a wrong value.
    typed = ["%(first_line)s - 1 + ord AS line", "source_asset_id AS sid"]
    checks = ["sid IS NOT NULL", "length(sid) <= 200"]
    for field, longest in _TEXTS:
        # Tickers are upper case, as validation leaves them.
        shown = f"upper({field}) AS {field}" if field == "symbol" else field
        typed.append(shown if field in columns else f"NULL::text AS {field}")
        if field in columns:
            checks.append(f"({field} IS NULL OR length({field}) <= {longest})")
    if date_format == "%Y-%m-%d":
        typed.append(f"CASE WHEN {_DAY_SHAPE} THEN observed_at::date::timestamp AT TIME ZONE 'UTC' END AS observed_at")
    else:
        typed.append(f"CASE WHEN observed_at ~ '{_ISO_NAIVE}' THEN observed_at::timestamp AT TIME ZONE 'UTC'"
                     f" WHEN observed_at ~ '{_ISO_OFFSET}' THEN observed_at::timestamptz END AS observed_at")
    # `latest` is now + validation.FUTURE_TOLERANCE, passed in: a constant, not an expression per row.
    checks.append(f"observed_at >= '{EARLIEST.isoformat()}' AND observed_at <= %(latest)s")
    for field, low, high in _NUMBERS:
        if field not in columns:
            typed.append(f"NULL::numeric AS {field}")
            continue
        typed.append(f"CASE WHEN {field} ~ '^[0-9.eE+-]+$' THEN {field}::numeric END AS {field}")
        typed.append(f"{field} IS NULL AS {field}_missing")
        bounded = f"{field} >= {low} AND {field} <= {high}"
        checks.append(bounded if field == "price_usd" else f"({field}_missing OR ({field} IS NOT NULL AND {bounded}))")
    # OFFSET 0 keeps PostgreSQL from folding the levels together, which would repeat each cast in every check.
    create_typed = (f"CREATE TEMP TABLE chunk_typed ON COMMIT DROP AS SELECT * FROM (SELECT {', '.join(typed)}"
                    f" FROM (SELECT ord, {cells} FROM chunk_rows OFFSET 0) AS cells OFFSET 0) AS typed"
                    f" WHERE {' AND '.join(checks)}")
    return Plan(
        create_rows=(f"CREATE TEMP TABLE chunk_rows (ord bigint GENERATED ALWAYS AS IDENTITY,"
                     f" {', '.join(f'c{i} text' for i in range(1, len(header) + 1))}) ON COMMIT DROP"),
        copy=f"COPY chunk_rows ({names}) FROM STDIN (FORMAT csv, DELIMITER {_literal(delimiter)})",
        create_typed=create_typed,
        numbers={columns[f]: f for f in NUMBER_FIELDS if f in columns},
    )
