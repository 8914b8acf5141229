"""Write the statements that parse, type and check a raw chunk inside PostgreSQL, for one file's mapping.

The rules are those of `validation.load_quote` for text cells, as `CsvSource.to_unified` hands them
over (stripped; an empty cell is missing), narrowed to what can be decided without doubt: a cell must
have a plain shape (a regular expression) before it is cast, and a cast that still fails raises. A
row outside those shapes is not kept: the caller reads that line the careful way, in Python, which
accepts it or words the reasons (pipeline/chunks.py). So this path only ever accepts rows that the Python
path accepts, with the same values (tests/pipeline/test_chunk_agreement.py holds the two together).

One kind of reject is also decided here: a line whose date holds a character no date of the file's
`date_format` can hold (a dash under '%d/%m/%Y': a wrong format, the common misconfiguration). Python
rejects such a line for its date alone, before any other cell is looked at, so its reason is known without
reading it; when the line is printable ASCII, its payload's JSON and the value's repr are known too. Those
lines are refused here with the payload and the reason Python gives them (`create_refused`), and a file
whose every date is in the wrong format costs no Python per line.

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
# Dates are typed here for no date_format (ISO 8601, as validation reads it) and for '%Y-%m-%d'; under any
# other format the lines with a date are left to Python, but for those refused here (below).
# The characters each strptime directive can match, as Python's _strptime patterns have them, for values of
# printable ASCII (the only ones refused here): digits, and a space before a single digit (%d, %I). A format
# with any other directive (a month's name, %c, a locale's) refuses nothing here.
_DIRECTIVE_CHARS = {**dict.fromkeys("dmyYHIMSfjUWwuVG", "0123456789 "), "z": "0123456789+-:.Zz", "%": "%"}
# Stand-ins for the parameters while a statement is built (see _params).
_FIRST_LINE, _SOURCE, _RUN, _BATCH, _FILE, _CHUNK = (f"<{name}>" for name in (
    "first line", "source", "run", "batch", "file", "chunk"))
# A line is refused here only if every cell is printable ASCII other than `"` and `\`: then its payload's
# JSON is its text between quotes, as Python writes it, and a value's repr is the value between quotes.
_NOT_PLAIN = "whole ~ '[^ -~]' OR strpos(whole, '\"') > 0 OR strpos(whole, E'\\\\') > 0"
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
    # The lines whose date certainly does not match date_format, with the payload Python gives them (TEMP
    # chunk_refused), and the statement keeping them as Python keeps its rejects; None when the format or the
    # header does not allow deciding that here.
    create_refused: str | None = None
    keep_refused: str | None = None
    refused_reason: str | None = None


def plan(header: Sequence[str], columns: Mapping[str, str], date_format: str | None,
         delimiter: str) -> Plan | None:
    """Return the statements for chunks read under `header`, or None if this path cannot read them exactly."""
    if delimiter in ("\\", '"', "\r", "\n") or len(delimiter) != 1:
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
    elif date_format is not None:
        typed.append("NULL::timestamptz AS observed_at")  # read in Python: every line with a date is doubtful
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
        **dict(zip(("create_refused", "keep_refused", "refused_reason"),
                   _refused(header, index[columns["observed_at"]], date_format) or (None, None, None))),
    )


def date_chars(date_format: str) -> str | None:
    """Every character a value strptime reads in `date_format` may hold, for printable ASCII values; None if a
    directive may match letters (or is unknown), so that no value can be said not to match by its characters."""
    chars: set[str] = set()
    position = 0
    while position < len(date_format):
        char = date_format[position]
        if char == "%":
            directive = date_format[position + 1:position + 2]
            if directive not in _DIRECTIVE_CHARS:
                return None
            chars.update(_DIRECTIVE_CHARS[directive])
            position += 2
            continue
        # strptime matches literal letters in either case, and any run of whitespace for whitespace.
        chars.update({char, char.lower(), char.upper(), " "} if char.isspace() or char.isalpha() else {char})
        position += 1
    return "".join(sorted(chars))


def _plain(text: str) -> bool:
    return all(" " <= char <= "~" for char in text) and '"' not in text and "\\" not in text


def _refused(header: Sequence[str], date_column: int, date_format: str | None) -> tuple[str, str, str] | None:
    """The statements finding and keeping the lines whose date certainly does not match `date_format`, and
    the reason of one (an expression of its payload, `kept.payload`).

    CsvSource.to_unified parses the date before anything else is validated, so such a line is rejected for
    that alone, whatever its other cells: {"_schema": ["observed_at: '<value>' does not match '<format>'"]}.
    Not under a header that names a column twice: two lines could then hold one payload, which one
    statement could not keep as one raw record.
    """
    allowed = date_chars(date_format) if date_format else None
    if allowed is None or len(set(header)) < len(header) or not all(_plain(name) for name in header):
        return None
    # The payload's canonical JSON (keys sorted, no spaces): an empty cell is NULL to COPY and "" to Python.
    number = {name: position for position, name in enumerate(header, 1)}
    pairs = " || ',' || ".join(f"{_literal(chr(34) + name + chr(34) + ':' + chr(34))} || coalesce(c{number[name]}, '')"
                               " || '\"'" for name in sorted(header))
    whole = "concat_ws('', " + ", ".join(f"c{i}" for i in range(1, len(header) + 1)) + ")"
    cell = f"btrim(c{date_column}, E' \\t')"
    find = (f"CREATE TEMP TABLE chunk_refused ON COMMIT DROP AS"
            f" SELECT {_FIRST_LINE} - 1 + ord AS line, '{{' || {pairs} || '}}' AS payload"
            f" FROM (SELECT *, {whole} AS whole FROM chunk_rows) AS r"
            f" WHERE {cell} <> '' AND translate({cell}, {_literal(allowed)}, '') <> '' AND NOT ({_NOT_PLAIN})")
    # The reason is read back from the payload each raw record returns (an earlier record of the same content
    # comes back as it was, equal): no join of the two inserts, one row of each per line.
    value = f"btrim(kept.payload ->> {_literal(header[date_column - 1])}, E' \\t')"
    quoted = f"CASE WHEN strpos({value}, '''') > 0 THEN '\"' || {value} || '\"' ELSE '''' || {value} || '''' END"
    message = f"'observed_at: ' || {quoted} || {_literal(' does not match ' + repr(date_format))}"
    reason = f"jsonb_build_object('_schema', jsonb_build_array({message}))"
    keep = ("WITH kept AS ("
            " INSERT INTO raw_records (source, run_id, batch_id, position, payload, content_hash, chunk_id, line)"
            f" SELECT {_SOURCE}, {_RUN}, {_BATCH}, {_FILE} || ':' || line, CAST(payload AS jsonb),"
            f" encode(sha256(convert_to(payload, 'UTF8')), 'hex'), {_CHUNK}, line FROM chunk_refused"
            " ON CONFLICT (source, content_hash) DO UPDATE SET chunk_id = coalesce(raw_records.chunk_id,"
            " EXCLUDED.chunk_id) RETURNING id, payload)"
            " INSERT INTO rejected_records (raw_record_id, run_id, source, reason)"
            f" SELECT id, {_RUN}, {_SOURCE}, {reason} FROM kept"
            " ON CONFLICT (raw_record_id) DO UPDATE SET run_id = EXCLUDED.run_id, reason = EXCLUDED.reason")
    return _params(find), _params(keep), _params(reason)


def _params(statement: str) -> str:
    """psycopg2 reads `%` as the start of a parameter: double a format's or a column's own, then name ours."""
    statement = statement.replace("%", "%%")
    for marker, name in ((_FIRST_LINE, "first_line"), (_SOURCE, "source"), (_RUN, "run_id"), (_BATCH, "batch_id"),
                         (_FILE, "file"), (_CHUNK, "chunk")):
        statement = statement.replace(marker, f"%({name})s")
    return statement
