"""Database URLs in every form platforms hand out reach the installed driver, and passwords never show."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from celery._state import get_current_app
from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import make_url

from kasparro import create_app
from kasparro.config import ConfigError, load_config, normalise_database_url
from kasparro.db import db
from kasparro.migrate import drop_database, init_db
from kasparro.redact import redact_text, redact_url
from tests.conftest import DATABASE_URL
from tests.conftest import test_config as config_for

QUOTED = "p%40ss%3Aw%2Frd%2540%3F%23x"  # p@ss:w/rd%40?#x, every character with a meaning in a URL


@pytest.fixture(autouse=True)
def _keep_current_celery() -> Iterator[None]:
    """Give back the process's current Celery app: create_app makes its own current, brokers and all."""
    before: Celery = get_current_app()
    yield
    before.set_current()
    before.set_default()


@pytest.mark.parametrize(("given", "expected"), [
    ("postgres://u:pw@db.example.com:5432/app", "postgresql+psycopg2://u:pw@db.example.com:5432/app"),
    ("postgresql://u@host/app", "postgresql+psycopg2://u@host/app"),
    ("postgresql+psycopg2://u@host/app", "postgresql+psycopg2://u@host/app"),
    # Only psycopg2-binary is installed, so psycopg 3 URLs go to psycopg2.
    ("postgresql+psycopg://u@host/app", "postgresql+psycopg2://u@host/app"),
    ("POSTGRES://u@host/app", "postgresql+psycopg2://u@host/app"),
    (f"postgres://u:{QUOTED}@host:6543/app?sslmode=require&application_name=etl",
     f"postgresql+psycopg2://u:{QUOTED}@host:6543/app?sslmode=require&application_name=etl"),
    ("postgres://u:p@ss@host/app", "postgresql+psycopg2://u:p@ss@host/app"),
    ("  postgres://host/app\n", "postgresql+psycopg2://host/app"),
])
def test_platform_database_urls_name_the_installed_driver(given: str, expected: str) -> None:
    assert normalise_database_url(given) == expected
    assert load_config({"DATABASE_URL": given})["SQLALCHEMY_DATABASE_URI"] == expected


@pytest.mark.parametrize("given", ["mysql://u:secret@host/app", "sqlite:///x.db", "u:secret@host/app",
                                   "postgresql+asyncpg://u:secret@host/app"])
def test_other_databases_are_refused_without_showing_the_password(given: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config({"DATABASE_URL": given})

    assert "secret" not in str(raised.value)


@pytest.mark.parametrize(("given", "shown"), [
    (f"postgresql+psycopg2://user:{QUOTED}@host:5432/db?sslmode=require",
     "postgresql+psycopg2://user:***@host:5432/db?sslmode=require"),
    ("postgres://user:p@ss@host/db", "postgres://user:***@host/db"),
    ("redis://:redispw@cache:6379/0", "redis://:***@cache:6379/0"),
    ("rediss://default:redispw@cache:6380/0?ssl_cert_reqs=required",
     "rediss://default:***@cache:6380/0?ssl_cert_reqs=required"),
    ("redis://cache:6379/0", "redis://cache:6379/0"),
    ("postgresql://user@host/db", "postgresql://user@host/db"),
    ("https://api.example.com/v1?x_cg_demo_api_key=abc&page=2&token=t0k",
     "https://api.example.com/v1?x_cg_demo_api_key=***&page=2&token=***"),
])
def test_urls_are_shown_with_their_secrets_masked(given: str, shown: str) -> None:
    assert redact_url(given) == shown


def test_urls_quoted_inside_an_error_message_are_masked() -> None:
    message = (f"GET https://bob:{QUOTED}@api.example.com/v1/coins?api_key=k3y failed; "
               "retried redis://:hunter2@cache:6379/0 and 'http://alice:p@ss@10.0.0.1:1/x?key=k2' too")

    masked = redact_text(message)

    for secret in (QUOTED, "k3y", "hunter2", "p@ss", "k2"):
        assert secret not in masked
    assert "https://bob:***@api.example.com/v1/coins?api_key=***" in masked


def test_redis_urls_are_used_as_given() -> None:
    config = load_config({"BROKER_URL": "rediss://:pw@cache:6380/0", "REDIS_URL": "redis://cache:6379/3"})

    assert (config["BROKER_URL"], config["RESULT_BACKEND"], config["REDIS_URL"]) == (
        "rediss://:pw@cache:6380/0", "rediss://:pw@cache:6380/0", "redis://cache:6379/3")


@pytest.fixture
def heroku_style_app(sources_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    """An app whose only database setting is DATABASE_URL=postgres://..., on a throwaway database."""
    # The test server, named as Heroku and Render name it: postgres://user:password@host:port/database.
    url = make_url(DATABASE_URL).set(drivername="postgres", database=f"kasparro_urls_{uuid.uuid4().hex[:8]}") \
        .render_as_string(hide_password=False)
    monkeypatch.setenv("DATABASE_URL", url)
    settings = config_for(sources_file)
    del settings["SQLALCHEMY_DATABASE_URI"]
    application = create_app(settings)
    yield application
    with application.app_context():
        db.engine.dispose()
    drop_database(url)


def test_a_postgres_scheme_url_builds_and_queries_the_database(heroku_style_app: Flask) -> None:
    init_db(heroku_style_app)

    with heroku_style_app.app_context():
        tables = db.session.execute(text("SELECT count(*) FROM information_schema.tables "
                                         "WHERE table_name IN ('runs', 'market_quotes', 'assets')")).scalar_one()
        assert db.engine.url.drivername == "postgresql+psycopg2"
    assert tables == 3


def test_etl_sources_names_the_database_with_its_password_masked(sources_file: Path) -> None:
    application = create_app({**config_for(sources_file),
                              "SQLALCHEMY_DATABASE_URI": f"postgres://etl:{QUOTED}@db.example.com:5432/kasparro"})

    result = application.test_cli_runner().invoke(args=["etl", "sources"])

    assert result.output.splitlines()[0] == "database: postgresql+psycopg2://etl:***@db.example.com:5432/kasparro"
    assert QUOTED not in result.output


def test_start_up_logs_where_it_connects_without_passwords(sources_file: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="kasparro"):
        create_app({**config_for(sources_file), "SQLALCHEMY_DATABASE_URI": "postgres://etl:dbpw@db:5432/k",
                    "BROKER_URL": "redis://:brokerpw@cache:6379/0", "REDIS_URL": "rediss://:redispw@cache:6380/1"})

    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("connecting to")]
    assert line == ("connecting to database postgresql+psycopg2://etl:***@db:5432/k, "
                    "broker redis://:***@cache:6379/0, redis rediss://:***@cache:6380/1")


def test_flower_and_inspect_conf_show_no_redis_password(sources_file: Path) -> None:
    application = create_app({**config_for(sources_file), "BROKER_URL": "redis://:brokerpw@cache:6379/0",
                              "RESULT_BACKEND": "redis://:backendpw@cache:6379/1",
                              "REDIS_URL": "redis://:redispw@cache:6379/2"})
    conf = application.extensions["celery"].conf

    # What Flower's worker page and `celery inspect conf` show.
    shown = str(conf.table(with_defaults=False, censored=True)) + conf.humanize(with_defaults=False, censored=True)

    for secret in ("brokerpw", "backendpw", "redispw"):
        assert secret not in shown
    assert "redis://:redispw@cache:6379/2" in conf.table(censored=False).values()  # beat still finds it
