"""The migrations build exactly the schema the models describe, so no table is ever made by create_all."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask
from flask_migrate import downgrade, upgrade
from sqlalchemy import text

from kasparro import create_app
from kasparro.db import db
from kasparro.migrate import drop_database, ensure_database
from kasparro.pipeline import partitions
from tests.conftest import DATABASE_URL
from tests.conftest import test_config as config_for


def test_the_migrated_database_matches_the_models(app: Flask) -> None:
    # With the options `flask db migrate` uses (kasparro.migrate), which leave the quotes' partitions out.
    options = app.extensions["migrate"].configure_args
    with app.app_context(), db.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn, opts=options), db.metadata)

    assert differences == []


def test_the_database_is_at_the_newest_revision(app: Flask) -> None:
    from alembic.script import ScriptDirectory

    with app.app_context(), db.engine.connect() as conn:
        config = app.extensions["migrate"].migrate.get_config()
        current = MigrationContext.configure(conn).get_current_revision()
        head = ScriptDirectory.from_config(config).get_current_head()

    assert head is not None and current == head


@contextmanager
def _database_of_its_own(app: Flask, sources_file: Path, name: str) -> Iterator[None]:
    """An app context on an empty database of its own (migrated by the test), dropped afterwards."""
    url = DATABASE_URL + name
    other = create_app({**config_for(sources_file), "SQLALCHEMY_DATABASE_URI": url})
    ensure_database(url)
    try:
        with other.app_context():
            yield
            db.engine.dispose()
    finally:
        drop_database(url)
        app.extensions["celery"].set_current()
        app.extensions["celery"].set_default()


def test_partitioning_the_quotes_and_back_keeps_every_row_its_id_and_the_id_sequence_and_history_in_default(
        app: Flask, sources_file: Path) -> None:
    with _database_of_its_own(app, sources_file, "_0017"):
        upgrade(revision="0016")
        this_month = partitions.month_start(datetime.now(timezone.utc))
        _quotes_of_three_months_and_a_gap_in_ids()
        before = _rows()
        upgrade(revision="0017")
        partitioned = _rows()
        homes = db.session.execute(text("SELECT DISTINCT tableoid::regclass::text FROM market_quotes")).scalars()
        next_id = db.session.execute(text("SELECT nextval('market_quotes_id_seq')")).scalar()
        db.session.rollback()
        downgrade(revision="0016")
        after = _rows()
        kind = db.session.execute(text("SELECT relkind FROM pg_class WHERE oid = 'market_quotes'::regclass")).scalar()

    assert len(before) == 6 and before == partitioned == after
    # Earlier months stay in DEFAULT (QUOTES_PARTITION_HISTORY moves them out); this month has its partition.
    assert sorted(homes) == sorted(["market_quotes_default", partitions.partition_name(this_month)])
    assert next_id == 8  # the sequence went on from where it was: ids 1-7 were taken
    assert kind == "r"


def _quotes_of_three_months_and_a_gap_in_ids() -> None:
    db.session.execute(text(
        "INSERT INTO market_quotes (asset_id, source, observed_at, price_usd, raw_chunk_id, raw_line, run_id)"
        " SELECT 1, 'csv', timestamptz '2024-01-31 22:00+00' + n * interval '1 hour', n, 1, n, 1"
        " FROM generate_series(1, 5) AS n"))
    db.session.execute(text("DELETE FROM market_quotes WHERE id = 3"))
    db.session.execute(text("INSERT INTO market_quotes (asset_id, source, observed_at, price_usd, raw_chunk_id,"
                            " raw_line, run_id, updated_at) VALUES (2, 'x', '2019-05-05', 2, 1, 1, 1, now())"))
    db.session.execute(text("INSERT INTO market_quotes (asset_id, source, observed_at, price_usd, raw_chunk_id,"
                            " raw_line, run_id) VALUES (2, 'x', now(), 3, 1, 2, 1)"))
    db.session.commit()


def _rows() -> list[tuple]:
    rows = db.session.execute(text("SELECT * FROM market_quotes ORDER BY id")).all()
    db.session.commit()
    return [tuple(row) for row in rows]


def _btrees() -> dict[str, str]:
    """market_quotes' own indexes (the parent's, which its partitions copy): name -> what it indexes."""
    rows = db.session.execute(text(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = 'market_quotes'::regclass")).all()
    db.session.commit()
    return {name: definition.split(" USING ", 1)[1] for name, definition in rows}


def test_the_quotes_keys_are_the_walks_indexes_and_their_change_and_back_keeps_every_row(
        app: Flask, sources_file: Path) -> None:
    with _database_of_its_own(app, sources_file, "_0019"):
        upgrade(revision="0018")
        _quotes_of_three_months_and_a_gap_in_ids()
        before, old = _rows(), _btrees()
        upgrade(revision="0019")
        keyed, new = _rows(), _btrees()
        downgrade(revision="0018")
        after, back = _rows(), _btrees()

    assert len(before) == 6 and before == keyed == after
    # Every B-tree a load writes is a key; the walks read the keys.
    assert new == {"pk_market_quotes": "btree (observed_at, id)",
                   "uq_market_quotes_asset_id_observed_at_source": "btree (asset_id, observed_at, source)",
                   "ix_market_quotes_run_id_brin": "brin (run_id) WITH (pages_per_range='32', autosummarize='on')"}
    assert back == old and len(old) == 5
