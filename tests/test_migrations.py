"""The migrations build exactly the schema the models describe, so no table is ever made by create_all."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask

from kasparro.db import db


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
