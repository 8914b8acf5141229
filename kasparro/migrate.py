"""Hold the Flask-Migrate handle and the helpers that build a database the way a deployment does."""
from __future__ import annotations

from flask import Flask
from flask_migrate import Migrate, upgrade
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from kasparro.config import normalise_database_url
from kasparro.db import db
from kasparro.pipeline import partitions


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Leave market_quotes' partitions out of autogenerate's comparison: the models describe the parent only."""
    return not (type_ == "table" and name is not None and partitions.is_partition(name))


migrate = Migrate(include_name=include_name)


def ensure_database(url: str) -> bool:
    """Create the database named in `url` if it is missing; True if it was created."""
    target = make_url(normalise_database_url(url))
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                  {"n": target.database}).scalar()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{target.database}"'))
            return not exists
    finally:
        admin.dispose()


def drop_database(url: str) -> None:
    """Drop the database named in `url`, closing its connections first (throwaway test and bench databases)."""
    target = make_url(normalise_database_url(url))
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                         {"n": target.database})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{target.database}"'))
    finally:
        admin.dispose()


def init_db(app: Flask) -> bool:
    """Create the database if needed, apply every migration and make the quotes' partitions ahead; True if
    the database was created."""
    created = ensure_database(app.config["SQLALCHEMY_DATABASE_URI"])
    with app.app_context():
        upgrade()
        # The migration made three months ahead; a deployment asking for more has them before beat's first day.
        partitions.ensure_partitions(db.session, app.config["QUOTES_PARTITION_MONTHS_AHEAD"])
        db.session.commit()
    return created
