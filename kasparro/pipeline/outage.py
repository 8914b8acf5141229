"""Tell a database outage (the server gone, restarting, or cutting connections) from a statement's own error.

A stage that met an outage is resumed, not failed: the outage says nothing of the source. Code that
catches errors broadly (a quality rule must never fail a load) must still let an outage through, since
the transaction it would carry on in is gone with the connection.
"""
from __future__ import annotations

import psycopg2
from sqlalchemy.exc import DBAPIError, OperationalError, PendingRollbackError

# SQLAlchemy's code for "Can't reconnect until invalid transaction is rolled back": the connection was
# invalidated (a disconnect) inside a transaction that something caught and carried on in.
_INVALIDATED_IN_TRANSACTION = "8s2b"


def database_unreachable(exc: BaseException) -> bool:
    """Return whether the error is the database going away or refusing connections, not a statement's error."""
    if isinstance(exc, PendingRollbackError):
        return exc.code == _INVALIDATED_IN_TRANSACTION
    if isinstance(exc, DBAPIError):
        driver, invalidated, operational = exc.orig, exc.connection_invalidated, isinstance(exc, OperationalError)
    elif isinstance(exc, psycopg2.Error):  # raised bare by the COPY paths, which use the driver's cursor
        driver, invalidated, operational = exc, False, isinstance(exc, psycopg2.OperationalError)
    else:
        return False
    # libpq's connection failures carry no SQLSTATE; class 08 is a lost connection, 57P an operator's
    # shutdown or a server starting up or crashed (a statement timeout, 57014, is the statement's own error).
    code = getattr(driver, "pgcode", None)
    return invalidated or (operational and code is None) or (code or "").startswith(("08", "57P"))
