"""Run the three stages in-process under cProfile and say where the time goes.

The Celery tasks are called directly (a bound task called as a function runs
in this process), so the code measured is exactly what the worker runs, minus
the broker. cProfile adds overhead to Python-heavy code (roughly 1.5-2x), so
read the shares, not the absolute seconds; SQL statements are timed with
SQLAlchemy cursor events (COPY goes through the raw cursor, see `db: COPY`).
"""
from __future__ import annotations

import cProfile
import pstats
import re
import sys
import time
from collections import defaultdict
from typing import Any

from flask import Flask
from sqlalchemy import event, text

GROUP_WIDTH = 34


def _group(key: tuple[str, int, str]) -> str:
    filename, _, name = key
    if filename == "~":
        if "psycopg2" in name and "copy" in name:
            return "db: COPY (copy_expert)"
        if "psycopg2" in name and "execute" in name:
            return "db: execute (SQL statements)"
        if "hashlib" in name or "openssl" in name:
            return "hashlib (sha256)"
        if "make_encoder" in name or "encode_basestring" in name:
            return "json (C encoder)"
        if "strptime" in name:
            return "datetime.strptime"
        return "builtins: " + re.sub(r"<(built-in )?(method|function) ", "", name).split(" of ")[0].strip("<>'")[:24]
    match = re.search(r"site-packages/([^/]+)/", filename)
    if match:
        return match.group(1)
    match = re.search(r"/(kasparro/.+)\.py$", filename)
    if match:
        return match.group(1).replace("/", ".")
    match = re.search(r"/lib/python3\.\d+/(.+?)(/__init__)?\.py$", filename)
    if match:
        return "stdlib " + match.group(1).split("/")[0]
    return filename.rsplit("/", 1)[-1]


class SqlTimer:
    """Accumulate time per SQL statement shape on an engine."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        conn.info.setdefault("_bench_t0", []).append(time.perf_counter())

    def _after(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        elapsed = time.perf_counter() - conn.info["_bench_t0"].pop()
        shape = " ".join(statement.split())[:90]
        self.totals[shape][0] += elapsed
        self.totals[shape][1] += 1

    def take(self) -> list[tuple[str, float, int]]:
        rows = sorted(((s, t, n) for s, (t, n) in self.totals.items()), key=lambda r: -r[1])
        self.totals.clear()
        return rows

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before)
        event.remove(self.engine, "after_cursor_execute", self._after)


def profile_stages(app: Flask, source: str, top: int = 14, out: Any = sys.stdout) -> dict[str, float]:
    """Create a run of `source` and run extract, transform and load in-process under cProfile."""
    from kasparro import tasks
    from kasparro.catalog import select_sources
    from kasparro.db import db
    from kasparro.pipeline import runs

    walls: dict[str, float] = {}
    with app.app_context():
        run = runs.create_run(db.session, "cli", select_sources(app.config, [source])).run
        db.session.commit()
        source_run_id = run.source_runs[0].id
        timer = SqlTimer(db.engine)
    try:
        for name, task in (("extract", tasks.extract), ("transform", tasks.transform), ("load", tasks.load)):
            profiler = cProfile.Profile()
            started = time.perf_counter()
            profiler.enable()
            task(source_run_id)
            profiler.disable()
            walls[name] = wall = time.perf_counter() - started
            stats = pstats.Stats(profiler)
            _report(out, name, wall, stats, timer.take(), top)
    finally:
        timer.close()
    with app.app_context():
        status = db.session.execute(text("SELECT status, inserted FROM run_sources WHERE id = :i"),
                                    {"i": source_run_id}).one()
        print(f"\nin-process run: status {status[0]}, {status[1]} rows inserted", file=out)
    return walls


def _report(out: Any, stage: str, wall: float, stats: pstats.Stats, sql: list[tuple[str, float, int]],
            top: int) -> None:
    raw = stats.stats  # type: ignore[attr-defined]
    groups: dict[str, float] = defaultdict(float)
    for key, (_, _, tottime, _, _) in raw.items():
        groups[_group(key)] += tottime
    total = sum(groups.values()) or 1.0
    print(f"\n=== {stage}: {wall:.2f} s wall under cProfile ===", file=out)
    print(f"  {'self time by package/module':<{GROUP_WIDTH}} {'s':>7} {'share':>6}", file=out)
    for name, seconds in sorted(groups.items(), key=lambda g: -g[1])[:10]:
        print(f"  {name:<{GROUP_WIDTH}} {seconds:7.2f} {seconds / total:6.0%}", file=out)
    print(f"  {'top functions (self time)':<60} {'calls':>9} {'self s':>7} {'cum s':>7}", file=out)
    rows = sorted(raw.items(), key=lambda kv: -kv[1][2])[:top]
    for (filename, line, func), (_, ncalls, tottime, cumtime, _) in rows:
        where = f"{filename.rsplit('site-packages/', 1)[-1].rsplit('/work/main/', 1)[-1]}:{line}({func})"
        print(f"  {where[-60:]:<60} {ncalls:9d} {tottime:7.2f} {cumtime:7.2f}", file=out)
    if sql:
        print(f"  {'SQL statements (SQLAlchemy cursor time)':<60} {'calls':>9} {'s':>7}", file=out)
        for shape, seconds, calls in sql[:6]:
            print(f"  {shape[:60]:<60} {calls:9d} {seconds:7.2f}", file=out)
