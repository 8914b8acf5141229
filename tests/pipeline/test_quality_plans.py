"""The price rules' statements after a bulk load read each quote a bounded number of times, whatever the
statistics say: no plan that goes over the quotes again for each asset or bucket it looks at.

Work is counted from EXPLAIN ANALYZE, not timed: for every step of the plan, the rows it returned plus the
rows its filters threw away, over all its loops.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from kasparro.db import db
from kasparro.pipeline import quality
from tests.api import factories as f

ASSETS, DAYS, EVERY = 10, 100, 20  # sources a and b quote 10 assets a day for 100 days; b is off every 20th day
QUOTES = 2 * ASSETS * DAYS


@pytest.fixture
def session(app: Flask) -> Iterator[Session]:
    with app.app_context():
        yield db.session
        db.session.rollback()


def bulk_load(session: Session, run_id: int) -> None:
    """Insert the quotes of sources a and b in one statement, as a chunk's upsert does."""
    session.execute(text(
        """
        INSERT INTO market_quotes (asset_id, source, observed_at, price_usd, raw_chunk_id, raw_line, run_id)
        SELECT a.id, s.source, :t0 + d * interval '1 day',
               CASE WHEN s.source = 'b' AND d % :every = 0 THEN 200 ELSE 100 END, 1, d, :run
        FROM assets a CROSS JOIN generate_series(1, :days) AS d CROSS JOIN (VALUES ('a'), ('b')) AS s (source)
        """), {"t0": f.T0, "every": EVERY, "days": DAYS, "run": run_id})


def no_statistics(session: Session) -> None:
    """Put market_quotes as it is right after the first load into a new database: never analyzed."""
    # This is what PostgreSQL 18 had when the rule hit its 30 s timeout on 5,000 quotes: autovacuum had not
    # got to the table yet, and 10,000 quotes is the least a run must write for the rules to ANALYZE it.
    # The parent and each of its partitions (migration 0017): the planner reads the partitions' figures.
    tables = "SELECT 'market_quotes'::regclass UNION ALL SELECT inhrelid FROM pg_inherits" \
             " WHERE inhparent = 'market_quotes'::regclass"
    session.execute(text(f"UPDATE pg_class SET reltuples = -1, relpages = 0 WHERE oid IN ({tables})"))
    session.execute(text(f"DELETE FROM pg_statistic WHERE starelid IN ({tables})"))


def analyzed(session: Session) -> None:
    """Bring market_quotes' statistics up to date."""
    session.execute(text("ANALYZE market_quotes"))


def statement_of(session: Session, marker: str, run: Any) -> tuple[str, dict[str, Any]]:
    """Run the quality rules and return the statement (with its parameters) whose text holds `marker`."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def note(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if marker in statement:
            seen.append((statement, parameters))

    event.listen(session.get_bind(), "before_cursor_execute", note)
    try:
        run()
    finally:
        event.remove(session.get_bind(), "before_cursor_execute", note)
    assert len(seen) == 1
    return seen[0]


def heaviest_step(plan: dict[str, Any]) -> tuple[float, str]:
    """Return the most rows one step of the plan handled over all its loops, and that step."""
    handled = (plan["Actual Rows"] + plan.get("Rows Removed by Filter", 0)
               + plan.get("Rows Removed by Join Filter", 0)) * plan["Actual Loops"]
    here = (handled, f"{plan['Node Type']} ({plan['Actual Loops']} loops)")
    return max([here, *(heaviest_step(child) for child in plan.get("Plans", []))])


# Each price rule's statement, and what it finds in the bulk load: b's price of 200 every 20th day.
RULES = [
    pytest.param("source_disagreement", "percentile_cont", (200, 150), id="source_disagreement"),  # vs median 150
    pytest.param("price_jump", "lag(", (200, 100), id="price_jump"),  # +100% on the day before; back down is -50%
]


@pytest.mark.parametrize("statistics", [no_statistics, analyzed], ids=["never analyzed", "analyzed"])
@pytest.mark.parametrize(("rule", "marker", "finding"), RULES)
def test_the_price_rules_read_each_quote_a_bounded_number_of_times_after_a_bulk_load(
        session: Session, statistics: Any, rule: str, marker: str, finding: tuple[int, int]) -> None:
    for n in range(ASSETS):
        f.asset(f"coin-{n}")
    run = f.run(sources=("a", "b"))
    part = next(sr for sr in run.source_runs if sr.source == "b")
    part.inserted = ASSETS * DAYS  # under the ANALYZE floor, like the 5,000-row bench
    bulk_load(session, run.id)
    statistics(session)

    found: list[quality.Finding] = []
    statement, parameters = statement_of(session, marker,
                                         lambda: found.extend(quality.evaluate(session, part, quality.Thresholds())))
    plan = session.connection().exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement,
                                                parameters).scalar_one()[0]["Plan"]

    rows, step = heaviest_step(plan)
    assert rows <= 2 * QUOTES, f"{step} handled {rows:.0f} rows for {QUOTES} quotes"
    # And the rule still compares what it should: that plan did the whole work.
    assert {(x.observed, x.expected) for x in found if x.rule == rule} == {finding}
    assert len([x for x in found if x.rule == rule]) == ASSETS * (DAYS // EVERY)
