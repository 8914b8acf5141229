"""Dependencies point one way: sources know nothing of Flask, Celery or the database; the API nothing of sources."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "kasparro"

FORBIDDEN = {
    "sources": ("flask", "celery", "sqlalchemy", "flask_sqlalchemy", "kasparro.pipeline", "kasparro.api",
                "kasparro.tasks", "kasparro.models", "kasparro.db"),
    "pipeline": ("flask", "celery", "kasparro.api", "kasparro.tasks"),
    "api": ("kasparro.sources", "kasparro.pipeline"),
    # The status page reads through the API's query functions and, like the API, never reaches below them.
    "ui": ("kasparro.sources", "kasparro.pipeline", "kasparro.tasks"),
    # Laptops and fault tests start these servers before anything else exists: the standard library only.
    "embedded": ("flask", "celery", "sqlalchemy", "flask_sqlalchemy", "redis", "psycopg2", "kasparro.api",
                 "kasparro.pipeline", "kasparro.sources", "kasparro.tasks", "kasparro.models", "kasparro.db"),
    "fake_upstream": ("flask", "celery", "sqlalchemy", "kasparro.sources", "kasparro.pipeline", "kasparro.api",
                      "kasparro.models", "kasparro.db", "kasparro.tasks"),
}


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_it_must_not_know(layer: str) -> None:
    offenders = {
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in (PACKAGE / layer).rglob("*.py")
        for name in imports(path)
        if any(name == banned or name.startswith(banned + ".") for banned in FORBIDDEN[layer])
    }
    assert not offenders
