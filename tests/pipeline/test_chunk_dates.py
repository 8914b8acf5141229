"""PostgreSQL's fast path reads a `%Y-%m-%d` day only where strptime reads the same day.

PostgreSQL's date input reads stray dashes that strptime refuses: "2019--1-05" is 5 January 2019 to it,
"01---01-15" is 1 January 2015. The chunk agreement property test found the first, a line PostgreSQL kept
and Python rejected; these pin the shapes it found and check the shape test against strptime cell by cell.
"""
from __future__ import annotations

import itertools
from datetime import date
from datetime import datetime
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import text

from kasparro.db import db
from kasparro.pipeline import chunk_sql
from tests.pipeline.chunk_paths import careful, csv_source, fast, first_chunk

PLAIN = ["bitcoin", "btc", "2019-01-05", "3800.5", "1", "1", "1", "n"]


@pytest.mark.usefixtures("app_ctx")
@pytest.mark.parametrize("day", ["2019--1-05", "2019--1--1", "2019--1-1-", "2019-01--1", "2019-01-1-", "2019-1---1",
                                 "2019-1--01", "2019-1--1-", "01---01-15"])
def test_a_day_with_stray_dashes_is_left_to_python_by_postgresql_and_rejected_by_python(app: Flask, tmp_path: Path,
                                                                                        day: str) -> None:
    source = csv_source(tmp_path)
    chunk = first_chunk(source, [PLAIN, ["eth", "eth", day, "1", "1", "1", "1", "n"]])
    assert chunk is not None and chunk.records == 2

    decision = fast(source, chunk)

    assert decision is not None
    typed, doubtful = decision.typed, decision.doubtful
    assert 3 not in typed, f"PostgreSQL read {day!r} as {typed[3][3]}"
    assert doubtful == [3]
    quotes, rejects = careful(source, chunk)
    assert set(quotes) == {2}
    assert rejects == {3: {"_schema": [f"observed_at: {day!r} does not match '%Y-%m-%d'"]}}


def _near_days() -> list[str]:
    """Return the cells a plain day becomes when its month and day, or its year, are any digits and dashes."""
    chars = "0123456789-"
    cells = {f"{year}-{a}{b}-{c}{d}" for year in ("2019", "2020") for a, b, c, d in itertools.product(chars, repeat=4)}
    cells |= {f"{''.join(year)}-{day}" for year in itertools.product(chars, repeat=4) for day in ("01-15", "02-29")}
    return sorted(cells)


def _strptime_day(cell: str) -> date | None:
    try:
        return datetime.strptime(cell, "%Y-%m-%d").date()
    except ValueError:
        return None


@pytest.mark.usefixtures("app_ctx")
def test_every_day_the_fast_path_shape_lets_through_is_one_strptime_reads_the_same(app: Flask) -> None:
    # A cell past the shape whose cast raises declines the whole chunk, so None from the cast is safe.
    db.session.execute(text("CREATE FUNCTION pg_temp.day_or_null(cell text) RETURNS date LANGUAGE plpgsql AS"
                            " $$ BEGIN RETURN cell::date; EXCEPTION WHEN others THEN RETURN NULL; END $$"))
    cells = _near_days()
    read = db.session.execute(text(f"SELECT observed_at, pg_temp.day_or_null(observed_at) FROM unnest(:cells)"
                                   f" AS observed_at WHERE {chunk_sql._DAY_SHAPE}"), {"cells": cells}).all()
    db.session.rollback()

    through = {cell: day for cell, day in read if day is not None}
    by_strptime = {cell: day for cell in cells if (day := _strptime_day(cell)) is not None}
    # Equal both ways: nothing strptime refuses or reads otherwise, and every plain day still goes the fast way.
    assert {cell: (day, by_strptime.get(cell)) for cell, day in through.items() if by_strptime.get(cell) != day} == {}
    assert through == by_strptime
