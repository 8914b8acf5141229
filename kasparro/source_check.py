"""Show a source's check (`flask etl sources --check NAME`): its first records mapped, validated and resolved."""
from __future__ import annotations

import io
import json
import logging
import shutil
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import click
from flask import current_app
from rich.console import Console
from rich.table import Table
from rich.text import Text

from kasparro import catalog
from kasparro.config import PROJECT_ROOT
from kasparro.db import db
from kasparro.pipeline import identity, preview
from kasparro.redact import REDACTED, redact_text

# Wide enough for the eight unified fields of a quote on one line each.
WIDTH = 200
# A cell longer than this (a news summary, a long name) is cut: the table is for reading a mapping.
CELL_CHARS = 40
# How each identity decision reads (see kasparro.pipeline.identity).
HOW = {"alias": "known alias", "override": "override", "source_id": "slug rule", "name": "name+symbol match",
       "new": "slug of its name or id"}


def show_check(name: str, records: int, as_json: bool) -> None:
    """Check the declared source `name` and print the outcome as tables (or JSON); nothing is written."""
    config = current_app.config
    spec = catalog.declared_source(config, name)
    with _quiet("kasparro.sources"), preview.read_only(db.session) as session:
        check = preview.check_source(session, name, spec, config["SECRETS"], PROJECT_ROOT,
                                     identity.load_overrides(config["ASSET_OVERRIDES_FILE"]), records)
    shown = json.dumps(as_document(check), default=str, indent=2) if as_json \
        else render(check, spec, config["SECRETS"])
    click.echo(scrub(shown, config["SECRETS"].values()))


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Hold a logger's records below ERROR back for the block."""
    # The check prints what its one request did; the client's log lines would only repeat it, around
    # the one line a failure gets.
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def scrub(text: str, secrets: Any) -> str:
    """Mask every secret value and secret-looking URL part in `text`, whatever quoted it (an echoing upstream)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return redact_text(text)


def as_document(check: preview.Check) -> dict[str, Any]:
    """Return the check as one JSON-ready document."""
    return {"source": check.source, "kind": check.kind, "target": check.target, "requests": check.requests,
            "written": False, "records": [{
                "position": r.position, "received": r.received, "unified": r.unified, "missing": r.missing,
                "identity": None if r.asset is None else {"slug": r.asset.slug, "method": r.asset.method,
                                                          "asset_exists": r.asset.exists},
                "valid": r.reasons is None, "reasons": r.reasons} for r in check.records],
            "drift": {"policy": check.drift_policy, "findings": [
                {"kind": d.kind, "field": d.field, "old": d.old, "new": d.new, "confidence": d.confidence}
                for d in check.drifts]}}


def render(check: preview.Check, spec: Mapping[str, Any], secrets: Mapping[str, str]) -> str:
    """Return the check as a heading, a table of unified fields, a table of findings, and a summary."""
    console = Console(file=io.StringIO(), width=shutil.get_terminal_size().columns if sys.stdout.isatty() else WIDTH)
    where = spec.get("path") or spec.get("url") or spec.get("base_url") or ""
    console.print(f"{check.source} ({check.kind}) {where}: {check.requests} request(s), "
                  f"first {len(check.records)} record(s) of its first page", markup=False, highlight=False)
    key = spec.get("api_key_env")
    if key:
        console.print(f"key: {key} {'is set' if secrets.get(key) else 'is not set: called without a key'}",
                      markup=False, highlight=False)
    if check.records:
        if all(r.unified is None for r in check.records):
            console.print(f"unified fields: no record could be mapped; the first one holds: "
                          f"{', '.join(check.records[0].received) or 'nothing'}", markup=False, highlight=False)
        else:
            console.print("unified fields", markup=False, highlight=False)
            console.print(_fields_table(check))
        console.print("findings", markup=False, highlight=False)
        console.print(_findings_table(check))
    for line in _drift_lines(check):
        console.print(line, markup=False, highlight=False)
    console.print(_summary(check), markup=False, highlight=False)
    return console.file.getvalue().rstrip()  # type: ignore[attr-defined]


def _fields_table(check: preview.Check) -> Table:
    names = list(dict.fromkeys(name for r in check.records for name in (r.unified or {})))
    table = Table("#", *names)
    for number, r in enumerate(check.records, 1):
        cells = [_cell(r.unified[n]) if n in r.unified else "" for n in names] if r.unified is not None \
            else ["(not mapped)"] + [""] * (len(names) - 1)
        table.add_row(str(number), *map(Text, cells))
    return table


def _findings_table(check: preview.Check) -> Table:
    table = Table("#", "position", "identity", "missing fields", "validation")
    for number, r in enumerate(check.records, 1):
        cells = (r.position, _identity(r.asset, check.target), ", ".join(r.missing) or "-",
                 "ok" if r.reasons is None else "rejected: " + _reasons(r.reasons))
        table.add_row(str(number), *map(Text, cells))
    return table


def _identity(decision: identity.Decision | None, target: str) -> str:
    if decision is None:
        return "-" if target == "quotes" else f"- ({target})"
    if decision.method == "alias":
        return f"{decision.slug} (known alias)"
    if decision.method == "new" and not decision.exists:
        return f"{decision.slug} (new asset)"
    return f"{decision.slug} ({HOW[decision.method]}, {'existing' if decision.exists else 'new'} asset)"


# What a run does about the drift it finds, by drift_policy (see kasparro.pipeline.drift).
POLICY_EFFECT = {"warn": "a run records it and goes on", "evolve": "a run maps renamed fields back, as above",
                 "freeze": "a run of this source would fail on it"}


def _drift_lines(check: preview.Check) -> list[str]:
    if not check.drifts:
        return []
    lines = [f"schema drift (drift_policy {check.drift_policy}: {POLICY_EFFECT[check.drift_policy]}):"]
    for d in check.drifts:
        sure = f" (confidence {d.confidence:.2f})" if d.confidence is not None else ""
        change = {"renamed": f"{d.old} -> {d.new}", "type_changed": f"{d.field} ({d.old} -> {d.new})"}
        lines.append(f"  {d.kind}: {change.get(d.kind, d.field)}{sure}")
    return lines


def _reasons(reasons: Mapping[str, Any]) -> str:
    return "; ".join(f"{field}: {' '.join(map(str, why)) if isinstance(why, list) else why}"
                     for field, why in reasons.items())


def _cell(value: Any) -> str:
    shown = "null" if value is None else str(value)
    return shown if len(shown) <= CELL_CHARS else shown[:CELL_CHARS - 1] + "…"


def _summary(check: preview.Check) -> str:
    rejected = sum(r.reasons is not None for r in check.records)
    new = sum(r.asset is not None and not r.asset.exists for r in check.records)
    return (f"{len(check.records)} record(s): {len(check.records) - rejected} valid, {rejected} rejected; "
            f"{new} would be new asset(s). Nothing was written (a read-only transaction, rolled back).")
