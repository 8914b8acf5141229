"""Give each bench a throwaway database built by the migrations, and take it away again."""
from __future__ import annotations

import sys
from typing import Any

from flask import Flask


def build_app(db_url: str, overrides: dict[str, Any]) -> Flask:
    """Create the app on a fresh database at `db_url`, migrated as a deployment is."""
    from sqlalchemy.engine import make_url

    from kasparro import create_app
    from kasparro.migrate import init_db

    app = create_app({"SQLALCHEMY_DATABASE_URI": db_url, **overrides})
    init_db(app)
    print(f"database {make_url(db_url).database} built by the migrations", flush=True)
    return app


def discard(app: Flask | None, db_url: str) -> None:
    """Close the app's connections and drop its database; a failure is reported, not raised."""
    from kasparro.db import db
    from kasparro.migrate import drop_database

    if app is not None:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
    try:
        drop_database(db_url)
    except Exception as exc:  # noqa: BLE001 - the bench's own result matters more
        print(f"could not drop {db_url}: {exc}", file=sys.stderr)
