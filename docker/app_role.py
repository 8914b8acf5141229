"""Give the compose stack's database to an application role that is not a superuser (the migrate job runs this).

    python docker/app_role.py     # ADMIN_DATABASE_URL: the superuser; DATABASE_URL: the app role's URL

The application connects as `kasparro_app` (DATABASE_URL), never as the superuser: a superuser runs
programs on the database host (`COPY ... TO PROGRAM`), reads its files and every other database. The
role owns the kasparro database, its public schema and every object in it, because the application
needs what only an owner may do on its own tables (ANALYZE, brin_summarize_new_values, the
migrations' DDL) and nothing beyond them: NOSUPERUSER, NOCREATEDB, NOCREATEROLE. Idempotent: every
`make up` runs it again, so a volume made before the role existed (everything owned by the superuser)
is handed over, and a changed APP_DB_PASSWORD takes effect.
"""
from __future__ import annotations

import os
import sys
from contextlib import closing

import psycopg2
from psycopg2 import sql
from sqlalchemy.engine import make_url

# Every object in the public schema the superuser still owns: relations (indexes follow their table),
# functions (the migrations' trigger functions) and standalone types. Each is handed to the role.
# (%% is format()'s %, escaped from psycopg2's parameters.)
HAND_OVER = """
DO $$
DECLARE item record;
BEGIN
  FOR item IN SELECT format('ALTER %%s %%s OWNER TO %%I',
                            CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                                           WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
                            c.oid::regclass, %(role)s) AS statement
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S', 'v', 'm')
                AND c.relowner <> %(role)s::regrole
                -- a serial's sequence follows its table, and refuses to be handed over on its own (a
                -- partition depends on its table the same way, but does not follow it: it is handed over)
                AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                                     AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
                                                     AND d.deptype IN ('a', 'i')))
              UNION ALL
              SELECT format('ALTER FUNCTION %%s OWNER TO %%I', p.oid::regprocedure, %(role)s)
              FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = 'public' AND p.proowner <> %(role)s::regrole
              UNION ALL
              SELECT format('ALTER TYPE %%s OWNER TO %%I', t.oid::regtype, %(role)s)
              FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
              WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd') AND t.typowner <> %(role)s::regrole
  LOOP
    EXECUTE item.statement;
  END LOOP;
END $$
"""


def connect(url: str, database: str) -> psycopg2.extensions.connection:
    """Open an autocommit connection to `database` with the login of `url`."""
    parsed = make_url(url)
    conn = psycopg2.connect(host=parsed.host, port=parsed.port or 5432, user=parsed.username,
                            password=parsed.password, dbname=database)
    conn.autocommit = True
    return conn


def ensure_role(cursor: psycopg2.extensions.cursor, role: str, password: str) -> None:
    """Create the login role if missing, and (again) strip it of every power beyond its own database."""
    cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
    if cursor.fetchone() is None:
        cursor.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    cursor.execute(sql.SQL("ALTER ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
                           "PASSWORD %s").format(sql.Identifier(role)), (password,))


def ensure_database(cursor: psycopg2.extensions.cursor, database: str, role: str) -> None:
    """Create the database owned by the role, or hand an existing one over."""
    cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
    verb = "ALTER DATABASE {} OWNER TO {}" if cursor.fetchone() else "CREATE DATABASE {} OWNER {}"
    cursor.execute(sql.SQL(verb).format(sql.Identifier(database), sql.Identifier(role)))


def main() -> int:
    """Create or update the role from DATABASE_URL, as the superuser of ADMIN_DATABASE_URL."""
    app = make_url(os.environ["DATABASE_URL"])
    admin = os.environ["ADMIN_DATABASE_URL"]
    if app.username == make_url(admin).username:
        print("app_role: DATABASE_URL logs in as the superuser; nothing to hand over", file=sys.stderr)
        return 1
    # closing(), not `with conn`: psycopg2 opens a transaction there even in autocommit, and CREATE DATABASE
    # refuses to run in one.
    with closing(connect(admin, "postgres")) as conn, conn.cursor() as cursor:
        ensure_role(cursor, app.username, app.password)
        ensure_database(cursor, app.database, app.username)
    with closing(connect(admin, app.database)) as conn, conn.cursor() as cursor:
        cursor.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(app.username)))
        cursor.execute(HAND_OVER, {"role": app.username})
    print(f"app_role: {app.username} owns database {app.database}; it is not a superuser")
    return 0


if __name__ == "__main__":
    sys.exit(main())
