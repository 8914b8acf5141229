"""Hold the SQLAlchemy handle and the declarative base shared by every model, and send reads where they belong."""
from __future__ import annotations

from typing import Any

from flask import g, has_app_context
from flask_sqlalchemy import SQLAlchemy
from flask_sqlalchemy.session import Session as FlaskSession
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase

# Stable constraint names so Alembic migrations and ON CONFLICT targets agree.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
# The engine of DATABASE_READ_URL among Flask-SQLAlchemy's binds (SQLALCHEMY_BINDS), when it is set.
READ_BIND = "read"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Session(FlaskSession):
    """Flask-SQLAlchemy's session, which sends every statement to the read database once `use_reads` was called.

    The flag lives in the app context, as the session does: a request's reads all go to one database.
    """

    def get_bind(self, mapper: Any | None = None, clause: Any | None = None,
                 bind: Engine | Connection | None = None, **kwargs: Any) -> Engine | Connection:
        if bind is None and has_app_context() and g.get("kasparro_reads") and READ_BIND in self._db.engines:
            return self._db.engines[READ_BIND]
        return super().get_bind(mapper=mapper, clause=clause, bind=bind, **kwargs)


def use_reads() -> None:
    """Send the rest of this app context's statements to DATABASE_READ_URL (nothing changes when it is unset)."""
    g.kasparro_reads = True


db = SQLAlchemy(model_class=Base, session_options={"class_": Session})
