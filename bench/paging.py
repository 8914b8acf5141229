"""`python -m bench.paging`: time GET /data keyset pages deep into a large table, against OFFSET paging.

Steps (see bench/README.md, "API paging bench"): build a throwaway database with the
migrations, insert N quotes with generate_series, then for three listings (newest first,
sort=observed_at, asset=<slug>) walk /data through the Flask test client page by page,
recording the cursors of pages 1, 100, 1,000 and 10,000. Each recorded page is then
requested again (median of --repeats), next to the same page read by the keyset SQL
alone and by `ORDER BY ... OFFSET k LIMIT n`. The walks are also checked: the ids of
the first --check-pages pages must equal, in order, what SQL returns for the same
prefix, and no id may appear twice anywhere in a walk. Exit status 1 if a check fails.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

os.environ["ENV_FILE"] = ""  # the bench never reads a developer's .env

from sqlalchemy import text  # noqa: E402

from bench.database import build_app, discard  # noqa: E402

SOURCES = ("bench_src_a", "bench_src_b")
ASSETS = 100
# Per source and hour, one "slot" of rows: 11 quotes of the busy asset (coin-1, every 327 s) and one quote
# of each of the 99 others. So coin-1 holds 10% of the rows (deep enough for page 1,000 at 1M rows).
BUSY_PER_HOUR = 11
SLOT = BUSY_PER_HOUR + ASSETS - 1
T0 = datetime(2020, 1, 1, tzinfo=timezone.utc)
PAGES = (1, 100, 1_000, 10_000)
QUOTE_COLUMNS = ("q.id, a.slug AS asset, a.symbol, a.name, q.source, q.observed_at, q.price_usd, q.market_cap_usd,"
                 " q.volume_24h_usd, q.percent_change_24h, q.raw_record_id, q.run_id, q.ingested_at")


@dataclass
class Listing:
    """One /data listing that is walked: its query string and how the OFFSET baseline reads it in SQL."""

    label: str
    params: dict[str, str]
    where: str = ""
    descending: bool = True
    rows: int = 0
    walk_pages: int = 0
    walk_seconds: float = 0.0
    cursors: dict[int, str | None] = field(default_factory=dict)
    timings: dict[str, dict[int, float]] = field(default_factory=dict)

    @property
    def sql_params(self) -> dict[str, str]:
        return {"asset": self.params["asset"]} if "asset" in self.params else {}

    @property
    def order(self) -> str:
        way = "DESC" if self.descending else "ASC"
        return f"q.observed_at {way}, q.id {way}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.paging", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="quotes to insert (default 1000000)")
    parser.add_argument("--limit", type=int, default=100, help="page size (default 100)")
    parser.add_argument("--repeats", type=int, default=20, help="timed requests per page; the median counts")
    parser.add_argument("--check-pages", type=int, default=2_000,
                        help="pages whose ids are compared, in order, with SQL (default 2000)")
    parser.add_argument("--db-server", default=os.environ.get("BENCH_DATABASE_SERVER",
                                                              "postgresql+psycopg2://postgres@127.0.0.1:5432"))
    args = parser.parse_args(argv)
    if args.rows < 1 or not 1 <= args.limit <= 1000 or args.repeats < 1 or args.check_pages < 0:
        parser.error("--rows and --repeats must be positive, --limit 1..1000, --check-pages >= 0")
    return args


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def fill(app: Any, rows: int) -> dict[str, int]:
    """Insert the assets, one run with a raw batch and one raw record per source, and `rows` quotes."""
    from kasparro.db import db
    from kasparro.models import RawBatch, RawRecord, Run, SourceRun

    with app.app_context():
        run = Run(trigger="cli", status="success", sources=list(SOURCES), config={})
        run.source_runs = [SourceRun(source=s, status="success", extract_done=True, extracted=0, loaded=0,
                                     inserted=0, updated=0, skipped=0, rejected=0, requests=0, retries=0,
                                     throttled=0, wait_seconds=0) for s in SOURCES]
        db.session.add(run)
        db.session.flush()
        raw_ids = []
        for source_run in run.source_runs:
            batch = RawBatch(run_source_id=source_run.id, source=source_run.source, seq=0, state="loaded",
                             cursor_after={}, received=1, new_records=1)
            db.session.add(batch)
            db.session.flush()
            # market_quotes.raw_record_id is a plain FK (not unique): one raw record is the lineage of every
            # quote of its source here.
            record = RawRecord(source=source_run.source, run_id=run.id, batch_id=batch.id, position="bench",
                               payload={"bench": "paging"}, content_hash=f"bench-paging-{source_run.source}")
            db.session.add(record)
            db.session.flush()
            raw_ids.append(record.id)
        db.session.execute(text(
            "INSERT INTO assets (slug, symbol, name)"
            " SELECT 'coin-' || i, 'C' || i, 'Coin ' || i FROM generate_series(1, :n) AS i ORDER BY i"),
            {"n": ASSETS})
        asset_ids = [row.id for row in db.session.execute(text(
            "SELECT id FROM assets WHERE slug LIKE 'coin-%' ORDER BY substr(slug, 6)::int"))]
        # Source A's rows first, then source B's over the same hours: ids do not follow observed_at, and
        # 200 quotes share each top-of-the-hour instant, so the id tie-break matters.
        half = (rows + 1) // 2
        db.session.execute(text(f"""
            INSERT INTO market_quotes (asset_id, source, observed_at, price_usd, market_cap_usd, volume_24h_usd,
                                       percent_change_24h, raw_record_id, run_id)
            SELECT (CAST(:assets AS integer[]))[CASE WHEN p < {BUSY_PER_HOUR} THEN 1
                                                    ELSE p - {BUSY_PER_HOUR} + 2 END],
                   (CAST(:sources AS text[]))[s + 1],
                   CAST(:t0 AS timestamptz) + make_interval(hours => h)
                       + make_interval(secs => CASE WHEN p < {BUSY_PER_HOUR} THEN p * (3600 / {BUSY_PER_HOUR})
                                                    ELSE 0 END),
                   100 + (g % 997) / 7.0, 1e9 + g, 1e6 + (g % 1000), ((g % 21) - 10) / 3.0,
                   (CAST(:raw AS bigint[]))[s + 1], :run
            FROM (SELECT g, s, (g - s * :half) / {SLOT} AS h, (g - s * :half) % {SLOT} AS p
                  FROM (SELECT g, CASE WHEN g < :half THEN 0 ELSE 1 END AS s
                        FROM generate_series(0, :n - 1) AS g) AS numbered) AS slots
            ORDER BY g
        """), {"assets": asset_ids, "sources": list(SOURCES), "t0": T0, "raw": raw_ids, "run": run.id,
               "half": half, "n": rows})
        db.session.commit()
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM (ANALYZE) market_quotes"))
            conn.execute(text("ANALYZE assets"))
        busy = db.session.execute(text(
            "SELECT count(*) FROM market_quotes WHERE asset_id = :a"), {"a": asset_ids[0]}).scalar_one()
        total = db.session.execute(text("SELECT count(*) FROM market_quotes")).scalar_one()
        db.session.commit()
    return {"total": total, "busy": busy}


def medians_ms(calls: dict[Any, Callable[[], Any]], repeats: int) -> dict[Any, float]:
    """Warm each call up once, then time them round-robin `repeats` times; return each median in ms.

    Round-robin, so that load from other processes on the host shifts every cell alike, not one of them.
    """
    timings: dict[Any, list[float]] = {key: [] for key in calls}
    for call in calls.values():
        call()
    for _ in range(repeats):
        for key, call in calls.items():
            started = time.perf_counter()
            call()
            timings[key].append(time.perf_counter() - started)
    return {key: statistics.median(values) * 1000 for key, values in timings.items()}


def truth_ids(app: Any, listing: Listing, count: int) -> list[int]:
    """The ids SQL puts first in the listing's order (what the walk must return, in that order)."""
    from kasparro.db import db

    with app.app_context():
        ids = list(db.session.execute(text(
            f"SELECT q.id FROM market_quotes q {listing.where} ORDER BY {listing.order} LIMIT :n"),
            {"n": count, **listing.sql_params}).scalars())
        db.session.commit()
    return ids


def walk(app: Any, client: Any, listing: Listing, limit: int, check_pages: int, problems: list[str]) -> None:
    """Follow next_cursor from page 1 to the last wanted page (or the end); record cursors; check the ids."""
    last_wanted = max(max(PAGES), check_pages)
    seen: set[int] = set()
    prefix: list[int] = []
    token: str | None = None
    duplicates = page = 0
    started = time.perf_counter()
    while True:
        page += 1
        if page in PAGES:
            listing.cursors[page] = token
        query = {**listing.params, "limit": limit, **({"cursor": token} if token else {})}
        response = client.get("/data", query_string=query)
        if response.status_code != 200:
            problems.append(f"{listing.label}: page {page} answered {response.status_code}: {response.data[:300]!r}")
            break
        body = response.get_json()
        ids = [row["id"] for row in body["data"]]
        duplicates += sum(1 for i in ids if i in seen)
        seen.update(ids)
        if page <= check_pages:
            prefix.extend(ids)
        token = body["meta"]["next_cursor"]
        if token is None or page >= last_wanted:
            break
        if page % 1000 == 0:
            print(f"  {listing.label}: page {page:,} ({time.perf_counter() - started:.0f}s)", flush=True)
    listing.walk_pages, listing.walk_seconds = page, time.perf_counter() - started
    if duplicates:
        problems.append(f"{listing.label}: {duplicates} rows seen twice in {page:,} pages")
    expected = truth_ids(app, listing, len(prefix) + 1)
    if prefix != expected[:len(prefix)] or (len(prefix) < check_pages * limit and len(expected) > len(prefix)):
        at = next((n for n, (a, b) in enumerate(zip(prefix, expected)) if a != b), min(len(prefix), len(expected)))
        problems.append(f"{listing.label}: walk and SQL differ at row {at:,} of the first {check_pages:,} pages "
                        f"(walk {prefix[at:at + 3]}, SQL {expected[at:at + 3]})")
    if token is None and len(seen) != listing.rows:
        problems.append(f"{listing.label}: the walk ended after {len(seen):,} distinct rows, expected {listing.rows:,}")


def measure(app: Any, client: Any, listing: Listing, limit: int, repeats: int) -> None:
    """Time each recorded page three ways: the API request, its keyset SQL alone, and OFFSET SQL."""
    from kasparro.api import cursor
    from kasparro.api.data import build_quotes_query, quote_filters
    from kasparro.db import db

    filters = quote_filters(listing.params)
    tag = cursor.fingerprint("data", filters)
    api_calls: dict[int, Callable[[], Any]] = {}
    keyset_calls: dict[int, Callable[[], Any]] = {}
    offset_calls: dict[int, Callable[[], Any]] = {}
    for page, token in sorted(listing.cursors.items()):
        query = {**listing.params, "limit": limit, **({"cursor": token} if token else {})}

        def request(query: dict[str, Any] = query) -> None:
            response = client.get("/data", query_string=query)
            assert response.status_code == 200, response.data[:300]

        after = cursor.decode(token, tag, (datetime, int)) if token else None
        skip = (page - 1) * limit
        # Page 1 of the baseline is a plain `SELECT ... ORDER BY ... LIMIT n`, later pages add OFFSET k.
        sql = text(f"SELECT {QUOTE_COLUMNS} FROM market_quotes q JOIN assets a ON a.id = q.asset_id {listing.where}"
                   f" ORDER BY {listing.order}" + (" OFFSET :k" if skip else "") + " LIMIT :n")
        api_calls[page] = request
        keyset_calls[page] = lambda after=after: db.session.execute(build_quotes_query(filters, limit, after)).all()
        offset_calls[page] = lambda sql=sql, skip=skip: db.session.execute(
            sql, {"k": skip, "n": limit, **listing.sql_params}).all()
    api = medians_ms(api_calls, repeats)
    with app.app_context():
        keyset = medians_ms(keyset_calls, repeats)
        offset = medians_ms(offset_calls, repeats)
        db.session.commit()
    for page in api:
        print(f"  {listing.label}: page {page:,}: API {api[page]:.2f} ms, keyset SQL {keyset[page]:.2f} ms, "
              f"OFFSET SQL {offset[page]:.2f} ms", flush=True)
    listing.timings = {"API GET /data (keyset cursor)": api, "  keyset SQL alone": keyset,
                       "  baseline: OFFSET k LIMIT n SQL": offset}


def print_table(listings: list[Listing], args: argparse.Namespace, counts: dict[str, int], fill_s: float) -> None:
    print()
    print(f"Kasparro API paging bench: {counts['total']:,} quotes ({ASSETS} assets, {len(SOURCES)} sources), "
          f"limit {args.limit}, median of {args.repeats} requests per cell, {os.cpu_count()} CPUs "
          f"(filled in {fill_s:.1f}s)")
    print()
    head = f"{'listing / method':<36}" + "".join(f"{'page ' + format(p, ','):>13}" for p in PAGES) \
        + f"{'deep/1st':>10}"
    print(head)
    print("-" * len(head))
    for listing in listings:
        print(f"{listing.label} — {listing.rows:,} rows, walked {listing.walk_pages:,} pages in "
              f"{listing.walk_seconds:.1f}s ({listing.walk_seconds / listing.walk_pages * 1000:.2f} ms/page)")
        for method, cells in listing.timings.items():
            values = "".join(f"{cells[p]:10.2f} ms" if p in cells else f"{'-':>13}" for p in PAGES)
            deepest = max(cells)
            ratio = f"{cells[deepest] / cells[1]:9.1f}x" if deepest > 1 else f"{'-':>10}"
            print(f"{method:<36}{values}{ratio}")
    print()
    print("deep/1st = the deepest page reached / page 1. Keyset SQL alone = the query GET /data sends "
          "(build_quotes_query), run in-process; OFFSET page 1 is a plain SELECT ... ORDER BY ... LIMIT n.")
    for listing in listings:
        cells = listing.timings
        api, offset = cells["API GET /data (keyset cursor)"], cells["  baseline: OFFSET k LIMIT n SQL"]
        deepest = max(api)
        if deepest > 1:
            print(f"{listing.label}: page {deepest:,} / page 1 = {api[deepest] / api[1]:.2f}x through the API "
                  f"(target ~1x); OFFSET page {deepest:,} / plain LIMIT = {offset[deepest] / offset[1]:.0f}x")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    db_url = f"{args.db_server.rstrip('/')}/kasparro_paging_{os.getpid()}"
    app = None
    problems: list[str] = []
    try:
        app = build_app(db_url, {"LOG_LEVEL": "WARNING", "READS_REQUIRE_KEY": False, "ENABLED_SOURCES": []})
        started = time.perf_counter()
        counts = fill(app, args.rows)
        fill_s = time.perf_counter() - started
        print(f"inserted {counts['total']:,} quotes and analyzed in {fill_s:.1f}s", flush=True)
        if counts["total"] != args.rows:
            problems.append(f"market_quotes holds {counts['total']:,} rows, expected {args.rows:,}")

        busy = "coin-1"
        listings = [
            Listing("newest first (default sort)", {}, rows=counts["total"]),
            Listing("sort=observed_at (oldest first)", {"sort": "observed_at"}, descending=False,
                    rows=counts["total"]),
            Listing(f"asset={busy}", {"asset": busy},
                    where="WHERE q.asset_id = (SELECT id FROM assets WHERE slug = :asset)", rows=counts["busy"]),
        ]
        client = app.test_client()
        for listing in listings:
            print(f"walking {listing.label} ...", flush=True)
            walk(app, client, listing, args.limit, args.check_pages, problems)
            measure(app, client, listing, args.limit, args.repeats)
        print_table(listings, args, counts, fill_s)
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    except Exception as exc:  # report, clean up, fail
        problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        discard(app, db_url)
    if problems:
        print("\nFAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print("\nOK: every walk returned each row once, in the same order as SQL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
