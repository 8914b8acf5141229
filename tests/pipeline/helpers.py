"""Helpers for pipeline tests: declare CSV sources and run them through the real worker."""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import func, select

from kasparro.db import db
from kasparro.fake_upstream.server import FakeUpstream
from kasparro.models import MarketQuote, Run
from kasparro.tasks import enqueue_run
from tests.conftest import ROOT, wait_for_run

HEADER = "currency,date,close,volume,market_cap\n"
COLUMNS = {"source_asset_id": "currency", "observed_at": "date", "price_usd": "close",
           "volume_24h_usd": "volume", "market_cap_usd": "market_cap"}


def csv_spec(path: Path, columns: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    """Return the settings of a CSV source reading `path`."""
    return {"kind": "csv", "path": str(path), "date_format": "%Y-%m-%d", "columns": columns or COLUMNS,
            "settle_seconds": 0, **extra}


def shipped(name: str, upstream: FakeUpstream, **settings: Any) -> dict[str, Any]:
    """Return sources.toml's block `name`, its base_url the fake upstream's at its offline_path (as OFFLINE does)."""
    spec = tomllib.loads((ROOT / "sources.toml").read_text())["sources"][name]
    path = spec.pop("offline_path")
    return {**spec, "base_url": upstream.base_url + path, **settings}


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value).lower() if isinstance(value, bool) else str(value)


def declare(sources_file: Path, specs: dict[str, dict[str, Any]]) -> None:
    """Write `specs` as the deployment's sources.toml."""
    lines = []
    for name, spec in specs.items():
        lines.append(f"[sources.{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in spec.items() if not isinstance(v, dict)]
        for key, table in ((k, v) for k, v in spec.items() if isinstance(v, dict)):
            lines.append(f"[sources.{name}.{key}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    sources_file.write_text("\n".join(lines) + "\n")


def run_now(app: Flask, sources: list[str] | None = None, trigger: str = "cli", timeout: float = 60) -> Run:
    """Queue a run through the broker and wait for the worker to finish it."""
    with app.app_context():
        start = enqueue_run(trigger, sources)
        assert start.created, f"run {start.run.id} was already active"
        run_id = start.run.id
    return wait_for_run(app, run_id, timeout)


def quote_count(app: Flask, source: str | None = None) -> int:
    """Count unified quotes, optionally for one source."""
    with app.app_context():
        query = select(func.count()).select_from(MarketQuote)
        if source:
            query = query.where(MarketQuote.source == source)
        return db.session.execute(query).scalar_one()
