"""Kasparro ETL: crypto market data from many sources, unified in PostgreSQL, served over HTTP."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the application: settings, database, logging, Celery, API, status page and CLI."""
    from kasparro import api, catalog, celery_app, cli, logs, metrics, redis_store, ui
    from kasparro.config import describe_connections, load_config, normalise_database_url, read_environment
    from kasparro.db import READ_BIND, db
    from kasparro.migrate import migrate

    app = Flask(__name__)
    app.config.from_mapping(load_config(read_environment()))
    if overrides:
        app.config.from_mapping(overrides)
    # Overrides (tests, the bench) may name the database as a platform does, too.
    app.config["SQLALCHEMY_DATABASE_URI"] = normalise_database_url(str(app.config["SQLALCHEMY_DATABASE_URI"]))
    if app.config.get("DATABASE_READ_URL"):
        # The API's reads go to this engine (kasparro.db.Session, kasparro.api.reads).
        app.config["SQLALCHEMY_BINDS"] = {READ_BIND: normalise_database_url(str(app.config["DATABASE_READ_URL"]))}
    logs.init_app(app)
    # A setting naming a source that is not there is malformed like any other: refuse it at start-up, in one
    # line (kasparro.boot), not as a 500 on /sources or a failed run later.
    catalog.check_enabled(app.config)
    # Every process that builds the app (API, worker, beat, CLI) says where it connects, passwords masked.
    logging.getLogger(__name__).info("connecting to %s", describe_connections(app.config))
    db.init_app(app)
    redis_store.init_app(app)
    migrate.init_app(app, db, directory=str(app.config.get("MIGRATIONS_DIR", _migrations_dir())))
    celery_app.init_app(app)
    metrics.init_app(app)
    api.init_app(app)
    ui.init_app(app)
    cli.init_app(app)
    return app


def _migrations_dir() -> str:
    from kasparro.config import PROJECT_ROOT

    return str(PROJECT_ROOT / "migrations")
