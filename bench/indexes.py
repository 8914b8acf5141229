"""`python -m bench.indexes`: what each index, foreign key and check on the hot tables costs per million rows.

For each of raw_records, quote_stage and market_quotes, a bare copy of the
table (its columns and defaults, nothing else) is filled with N generated
rows by one `INSERT … SELECT`, then again with one constraint added at a
time, then with all of them, as the migrations build it. Each variant runs
`--repeats` times on a fresh copy; the median counts. The cost of a
constraint is its variant's time minus the bare copy's, scaled to a million
rows. Time is the backend's CPU seconds (read from /proc, so other work on a
shared machine does not count) and the wall time including the commit.
Needs only PostgreSQL (`--db-server` / `BENCH_DATABASE_SERVER`).
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from typing import Any, NamedTuple

os.environ["ENV_FILE"] = ""  # the bench never reads a developer's .env

from sqlalchemy import create_engine, text

from bench.database import build_app, discard
from bench.procs import cpu_seconds
from kasparro.config import normalise_database_url

ASSETS = 1000


class Variant(NamedTuple):
    """A copy of a table with some of its constraints, and the columns its rows are selected as."""

    label: str
    ddl: tuple[str, ...]
    unlogged: bool = False
    select: str | None = None  # a different SELECT list, for a variant that changes a column's type


# The generated rows: parents (one batch; ASSETS assets; N raw records for the
# quotes' foreign key) and one source table per hot table, so the timed statement only copies.
SETUP = (
    # The batch needs no run: only its primary key is looked up by the foreign keys measured here.
    "ALTER TABLE raw_batches DROP CONSTRAINT fk_raw_batches_run_source_id_run_sources",
    ("INSERT INTO raw_batches (id, run_source_id, source, seq, state, cursor_after, received, new_records)"
    " VALUES (1, 1, 'bench', 1, 'extracted', '{{}}', 0, 0)"),
    ("INSERT INTO assets (id, slug, symbol, name) SELECT i, 'coin-' || i, 'C' || i, 'Coin ' || i"
    " FROM generate_series(1, {assets}) i"),
    ("CREATE TABLE src_raw AS SELECT i AS id, 'bench'::varchar(100) AS source, 1::bigint AS run_id,"
    " 1::bigint AS batch_id, 'bench.csv:' || i AS position,"
    " jsonb_build_object('currency', 'coin-' || (i % {assets}), 'date', '2019-01-01', 'close', (i % 9973)::text,"
    " 'volume', (i * 7)::text, 'market_cap', (i * 13)::text) AS payload,"
    " encode(sha256(i::text::bytea), 'hex') AS content_hash, sha256(i::text::bytea) AS content_digest"
    " FROM generate_series(1, {rows}) i"),
    ("INSERT INTO raw_records (id, source, run_id, batch_id, position, payload, content_hash)"
    " SELECT id, source, run_id, batch_id, position, payload, content_hash FROM src_raw"),
    ("CREATE TABLE src_quotes AS SELECT i AS raw_record_id, 1::bigint AS batch_id, 1::bigint AS run_id,"
    " 'bench'::varchar(100) AS source, 1 + i % {assets} AS asset_id,"
    " timestamptz '2019-01-01' + (i / {assets}) * interval '1 hour' AS observed_at,"
    " (i % 9973)::numeric AS price_usd, (i * 13)::numeric AS market_cap_usd, (i * 7)::numeric AS volume_24h_usd,"
    " NULL::numeric AS percent_change_24h FROM generate_series(1, {rows}) i"),
    "ANALYZE",
)
RAW_COLUMNS = "source, run_id, batch_id, position, payload, content_hash"
STAGE_COLUMNS = ("raw_record_id, batch_id, run_id, source, asset_id, observed_at, price_usd, market_cap_usd,"
                 " volume_24h_usd, percent_change_24h")
QUOTE_COLUMNS = ("asset_id, source, observed_at, price_usd, market_cap_usd, volume_24h_usd, percent_change_24h,"
                 " raw_record_id, run_id")
FK_BATCH = "ADD FOREIGN KEY (batch_id) REFERENCES raw_batches(id) ON DELETE CASCADE"
TABLES: dict[str, tuple[str, str, tuple[Variant, ...]]] = {
    "raw_records": (RAW_COLUMNS, "src_raw", (
        Variant("primary key (id)", ("ADD PRIMARY KEY (id)",)),
        Variant("unique (source, content_hash) text hex", ("ADD UNIQUE (source, content_hash)",)),
        Variant("unique (source, content_hash) bytea sha256",
                ("ALTER COLUMN content_hash TYPE bytea USING NULL", "ADD UNIQUE (source, content_hash)"),
                select="source, run_id, batch_id, position, payload, content_digest"),
        Variant("index (batch_id)", ("CREATE INDEX ON {t} (batch_id)",)),
        Variant("FK batch_id -> raw_batches", (FK_BATCH,)),
        Variant("all, as migrated", ("ADD PRIMARY KEY (id)", "ADD UNIQUE (source, content_hash)",
                                     "CREATE INDEX ON {t} (batch_id)", FK_BATCH)),
    )),
    "quote_stage": (STAGE_COLUMNS, "src_quotes", (
        Variant("primary key (raw_record_id)", ("ADD PRIMARY KEY (raw_record_id)",)),
        Variant("index (batch_id)", ("CREATE INDEX ON {t} (batch_id)",)),
        Variant("FK batch_id -> raw_batches", (FK_BATCH,)),
        Variant("all, as migrated", ("ADD PRIMARY KEY (raw_record_id)", "CREATE INDEX ON {t} (batch_id)", FK_BATCH)),
        Variant("all, UNLOGGED", ("ADD PRIMARY KEY (raw_record_id)", "CREATE INDEX ON {t} (batch_id)", FK_BATCH),
                unlogged=True),
        Variant("bare, UNLOGGED", (), unlogged=True),
    )),
    "market_quotes": (QUOTE_COLUMNS, "src_quotes", (
        Variant("primary key (id)", ("ADD PRIMARY KEY (id)",)),
        Variant("primary key (observed_at, id)", ("ADD PRIMARY KEY (observed_at, id)",)),
        Variant("unique (source, asset_id, observed_at)", ("ADD UNIQUE (source, asset_id, observed_at)",)),
        Variant("unique (asset_id, observed_at, source)", ("ADD UNIQUE (asset_id, observed_at, source)",)),
        Variant("index (asset_id, observed_at, id)", ("CREATE INDEX ON {t} (asset_id, observed_at, id)",)),
        Variant("index (observed_at, id)", ("CREATE INDEX ON {t} (observed_at, id)",)),
        Variant("index (run_id, id)", ("CREATE INDEX ON {t} (run_id, id)",)),
        Variant("check price_usd >= 0", ("ADD CHECK (price_usd >= 0)",)),
        Variant("FK asset_id -> assets", ("ADD FOREIGN KEY (asset_id) REFERENCES assets(id)",)),
        Variant("FK raw_record_id -> raw_records", ("ADD FOREIGN KEY (raw_record_id) REFERENCES raw_records(id)",)),
        Variant("index brin (run_id)", ("CREATE INDEX ON {t} USING brin (run_id) WITH (pages_per_range = 32)",)),
        Variant("all, as migrated (0019)", (
            "ADD PRIMARY KEY (observed_at, id)", "ADD UNIQUE (asset_id, observed_at, source)",
            "CREATE INDEX ON {t} USING brin (run_id) WITH (pages_per_range = 32)", "ADD CHECK (price_usd >= 0)",
            "ADD FOREIGN KEY (raw_record_id) REFERENCES raw_records(id)")),
        Variant("all, as before 0019", (
            "ADD PRIMARY KEY (id)", "ADD UNIQUE (source, asset_id, observed_at)",
            "CREATE INDEX ON {t} (asset_id, observed_at, id)", "CREATE INDEX ON {t} (observed_at, id)",
            "CREATE INDEX ON {t} USING brin (run_id) WITH (pages_per_range = 32)", "ADD CHECK (price_usd >= 0)",
            "ADD FOREIGN KEY (raw_record_id) REFERENCES raw_records(id)")),
    )),
}


class Timing(NamedTuple):
    """Median backend CPU seconds and wall seconds of one variant's insert."""

    cpu: float
    wall: float


def _statement(ddl: str, table: str) -> str:
    return ddl.format(t=table) if ddl.startswith("CREATE") else f"ALTER TABLE {table} {ddl}"


def _insert_once(raw: Any, table: str, columns: str, source: str, variant: Variant) -> Timing:
    cursor = raw.cursor()
    cursor.execute("DROP TABLE IF EXISTS scratch")
    kind = "UNLOGGED TABLE" if variant.unlogged else "TABLE"
    cursor.execute(f"CREATE {kind} scratch (LIKE {table} INCLUDING DEFAULTS)")
    for ddl in variant.ddl:
        cursor.execute(_statement(ddl, "scratch"))
    raw.commit()
    cursor.execute("SELECT pg_backend_pid()")
    backend = cursor.fetchone()[0]
    cpu, wall = cpu_seconds(backend) or 0.0, time.perf_counter()
    cursor.execute(f"INSERT INTO scratch ({columns}) SELECT {variant.select or columns} FROM {source}")
    raw.commit()
    return Timing((cpu_seconds(backend) or 0.0) - cpu, time.perf_counter() - wall)


def measure(engine: Any, table: str, columns: str, source: str, variant: Variant, repeats: int) -> Timing:
    """Insert the generated rows into a copy of `table` with `variant`'s constraints; median of `repeats`."""
    raw = engine.raw_connection()
    try:
        runs = [_insert_once(raw, table, columns, source, variant) for _ in range(repeats)]
    finally:
        raw.close()
    return Timing(statistics.median(r.cpu for r in runs), statistics.median(r.wall for r in runs))


def report(table: str, rows: int, bare: Timing, results: list[tuple[str, Timing]]) -> None:
    """Print one table's variants: seconds added per million rows, and time against the bare copy."""
    scale = 1_000_000 / rows
    print(f"\n{table}: bare copy {bare.cpu * scale:.2f} s CPU / {bare.wall * scale:.2f} s wall per 1M rows")
    print(f"  {'with':<44} {'+CPU s/1M':>10} {'+wall s/1M':>11} {'CPU x bare':>11} {'wall x bare':>12}")
    for label, timing in results:
        print(f"  {label:<44} {(timing.cpu - bare.cpu) * scale:10.2f} {(timing.wall - bare.wall) * scale:11.2f}"
              f" {timing.cpu / max(bare.cpu, 1e-9):10.2f}x {timing.wall / max(bare.wall, 1e-9):11.2f}x")


def run(db_url: str, rows: int, repeats: int) -> None:
    """Generate the rows, then measure every table's variants and print them."""
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            for statement in SETUP:
                conn.execute(text(statement.format(rows=rows, assets=ASSETS)))
        for table, (columns, source, variants) in TABLES.items():
            bare = measure(engine, table, columns, source, Variant("bare", ()), repeats)
            report(table, rows, bare, [(v.label, measure(engine, table, columns, source, v, repeats))
                                       for v in variants])
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.indexes", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows per insert (default 200000)")
    parser.add_argument("--repeats", type=int, default=3, help="inserts per variant; the median counts")
    parser.add_argument("--db-server", default=os.environ.get("BENCH_DATABASE_SERVER",
                                                              "postgresql+psycopg2://postgres@127.0.0.1:5432"))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, _: (_ for _ in ()).throw(KeyboardInterrupt(signum)))
    db_url = f"{normalise_database_url(args.db_server).rstrip('/')}/kasparro_indexes_{os.getpid()}"
    app = None
    try:
        app = build_app(db_url, {"ENABLED_SOURCES": [], "OFFLINE": True, "LOG_LEVEL": "WARNING"})
        print(f"{args.rows:,} rows per insert, median of {args.repeats}; CPU = the inserting backend's")
        run(db_url, args.rows, args.repeats)
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        discard(app, db_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
