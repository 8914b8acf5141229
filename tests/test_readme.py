"""The README's reference tables name exactly what exists: every route of the app, every table the migrations
build, every make target it tells a reader to type. A line that names something gone, or a new thing left out,
fails here instead of misleading a reader."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from flask import Flask
from sqlalchemy import text

from kasparro.db import db

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")

# Routes that are not part of the HTTP API table: the status page, its assets and the generated docs.
NOT_API = re.compile(r"^/(ui|static|docs|openapi\.json|swagger-ui|redoc|$)")


def _section(title: str) -> str:
    """The README text under the `## title` heading, up to the next heading of that level."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end]


def _first_cells(section: str) -> list[str]:
    """The first cell of every row of the section's tables."""
    return [line.split("|")[1] for line in section.splitlines() if line.startswith("| ")]


def _api_routes_in_readme() -> set[tuple[str, str]]:
    """(method, path) pairs of the API table, with `<name>` / `<int:name>` placeholders written as `<>`."""
    routes = set()
    for cell in _first_cells(_section("HTTP API")):
        for method, path in re.findall(r"`(GET|POST|PUT|PATCH|DELETE) ([^`?]+)(?:\?[^`]*)?`", cell):
            routes.add((method, re.sub(r"<[^>]*>", "<>", path)))
    return routes


def _api_routes_of(app: Flask) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if NOT_API.match(rule.rule):
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((method, re.sub(r"<[^>]*>", "<>", rule.rule)))
    return routes


def test_the_api_table_lists_every_route_of_the_app_and_nothing_else(app: Flask) -> None:
    in_readme, served = _api_routes_in_readme(), _api_routes_of(app)
    assert served - in_readme == set(), "routes the README's API table leaves out"
    assert in_readme - served == set(), "routes the README's API table names that the app does not serve"


def test_the_data_model_lists_every_table_the_migrations_build_and_nothing_else(app: Flask) -> None:
    documented = {cell.strip().strip("`") for cell in _first_cells(_section("Data model"))} - {"table"}
    with app.app_context():
        built = set(db.session.execute(text(
            # market_quotes' monthly partitions are part of it, not tables of their own
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
            " AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relname <> 'alembic_version'"
        )).scalars())
    assert built - documented == set(), "tables the README's data model leaves out"
    assert documented - built == set(), "tables the README's data model names that the migrations do not build"


def test_every_make_target_the_readme_names_exists() -> None:
    listed = subprocess.run(["make", "-qp"], cwd=ROOT, capture_output=True, text=True).stdout
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", listed, flags=re.M))
    named = set(re.findall(r"`make ([a-z][a-z0-9-]*)", README))
    assert named, "the README names no make target: the pattern is wrong"
    assert named - targets == set()
