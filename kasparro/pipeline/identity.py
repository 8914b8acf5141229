"""Decide which canonical asset each source's coin is, and remember how it was decided.

In order: an alias we already have; a shipped override; the slug another source of
the same id space already decided for this id; a slug the source's own id implies
(CoinGecko ids are our slugs); a known asset with the same normalised name and
symbol; else a new asset. Symbols alone never merge two coins, since many coins
share a ticker. `preview` makes the same decisions and writes nothing
(`flask etl sources --check`).

Why the id space: the ticker guard below reads what exists, so a CoinPaprika id
decided before CoinGecko's listing lands and the same id decided after it would
land on two assets (RNDR and RENDER). The first decision per (id space, id) is
recorded under a primary key and every later source of that space follows it.
"""
from __future__ import annotations

import csv
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from kasparro.models import Asset, AssetAlias, IdSpaceSlug


@dataclass(frozen=True)
class CoinRef:
    """How a source names one coin."""

    source_asset_id: str
    symbol: str | None
    name: str | None


def coin_ref(quote: Mapping[str, Any]) -> CoinRef:
    """Return how a validated quote names its coin."""
    return CoinRef(quote["source_asset_id"], quote.get("symbol"), quote.get("name"))


# kind -> function giving the canonical slug a source id implies, or None.
SLUG_RULES: dict[str, Callable[[CoinRef], str | None]] = {}


def slugify(value: str) -> str:
    """Lower-case `value` and join its words with dashes."""
    return re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")


def normalise_name(value: str | None) -> str:
    """Reduce a coin name to letters and digits for comparison."""
    return re.sub(r"[^a-z0-9]", "", (value or "").lower())


@lru_cache(maxsize=8)
def load_overrides(path: str) -> dict[tuple[str, str], str]:
    """Read the override file: (source kind or name, source id) -> canonical slug."""
    if not path or not Path(path).is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as handle:
        return {(row["source"], row["source_asset_id"]): row["slug"]
                for row in csv.DictReader(line for line in handle if not line.startswith("#"))}


def source_overrides(shipped: Mapping[tuple[str, str], str], source: object) -> dict[tuple[str, str], str]:
    """Return the shipped overrides under the source's own (an http source's `coins`), which win."""
    own = getattr(source, "asset_overrides", None)
    return {**shipped, **own} if own else dict(shipped)


def _decide(session: Session, ref: CoinRef, source: str, kind: str,
            overrides: Mapping[tuple[str, str], str], claimed: Mapping[str, str]) -> tuple[str, str]:
    """Return (slug, match method) for a coin with no alias yet; `claimed` is its id space's earlier decisions."""
    for key in ((source, ref.source_asset_id), (kind, ref.source_asset_id)):
        if key in overrides:
            return overrides[key], "override"
    if ref.source_asset_id in claimed:
        return claimed[ref.source_asset_id], "id_space"
    rule = SLUG_RULES.get(kind)
    implied = rule(ref) if rule else None
    if implied:
        existing = session.execute(select(Asset.symbol).where(Asset.slug == implied)).first()
        if existing and existing.symbol and ref.symbol and existing.symbol.upper() != ref.symbol.upper():
            # Same slug, different ticker: two coins, not one. Keep them apart.
            return f"{implied}-{slugify(ref.symbol)}", "new"
        return implied, "source_id"
    if ref.name:
        same_name = session.execute(
            select(Asset.slug).where(text("regexp_replace(lower(assets.name), '[^a-z0-9]', '', 'g') = :n"),
                                     Asset.symbol == (ref.symbol or "").upper())
            .params(n=normalise_name(ref.name)).limit(1)
        ).scalar()
        if same_name:
            return same_name, "name"
    return slugify(ref.name or ref.source_asset_id) or slugify(ref.source_asset_id), "new"


def _claimed(session: Session, kind: str, ids: list[str]) -> dict[str, str]:
    """Return the slug recorded for each of `ids` in the id space of `kind`, where one is."""
    if kind not in SLUG_RULES or not ids:
        return {}
    return dict(session.execute(select(IdSpaceSlug.source_asset_id, IdSpaceSlug.slug)
                                .where(IdSpaceSlug.id_space == kind, IdSpaceSlug.source_asset_id.in_(ids))).all())


def _claim(session: Session, kind: str, decided: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """Record each decision in the id space of `kind`, and follow the one recorded first where another was.

    A claim another transaction holds uncommitted makes the insert wait for it, so two sources deciding one id
    at the same moment still agree. Overrides are not recorded: they win anyway, and may change.
    """
    fresh = sorted(sid for sid, (_, method) in decided.items() if method not in ("override", "id_space"))
    if kind not in SLUG_RULES or not fresh:
        return decided
    # In id order, so two transactions claiming overlapping ids take their locks in the same order.
    session.execute(insert(IdSpaceSlug).values([{"id_space": kind, "source_asset_id": sid,
                                                 "slug": decided[sid][0]} for sid in fresh])
                    .on_conflict_do_nothing())
    held = _claimed(session, kind, fresh)
    return {sid: (held[sid], "id_space") if held.get(sid, slug) != slug else (slug, method)
            for sid, (slug, method) in decided.items()}


def _known(session: Session, source: str, ids: list[str], column: Any) -> dict[str, Any]:
    """Return `column` (an asset's id or slug) for each of `ids` the source already has an alias for."""
    return dict(session.execute(
        select(AssetAlias.source_asset_id, column).join(Asset, Asset.id == AssetAlias.asset_id)
        .where(AssetAlias.source == source, AssetAlias.source_asset_id.in_(ids))
    ).all())


@dataclass(frozen=True)
class Decision:
    """Which canonical slug a coin resolves to, how (alias, override, id_space, source_id, name, new), and whether
    that asset exists yet."""

    slug: str
    method: str
    exists: bool


def preview(session: Session, source: str, kind: str, refs: Mapping[str, CoinRef],
            overrides: Mapping[tuple[str, str], str]) -> dict[str, Decision]:
    """Say what `resolve` would decide for each source id in `refs`, reading only: nothing is written."""
    known = _known(session, source, list(refs), Asset.slug)
    claimed = _claimed(session, kind, [sid for sid in refs if sid not in known])
    decided = {sid: (known[sid], "alias") if sid in known
               else _decide(session, ref, source, kind, overrides, claimed) for sid, ref in refs.items()}
    slugs = {slug for slug, _ in decided.values()}
    existing = set(session.execute(select(Asset.slug).where(Asset.slug.in_(slugs))).scalars())
    return {sid: Decision(slug, method, slug in existing) for sid, (slug, method) in decided.items()}


def resolve(session: Session, source: str, kind: str, refs: Mapping[str, CoinRef],
            overrides: Mapping[tuple[str, str], str]) -> dict[str, int]:
    """Map each source id in `refs` to an asset id, creating assets and aliases as needed."""
    known = _known(session, source, list(refs), AssetAlias.asset_id)
    new = [sid for sid in refs if sid not in known]
    claimed = _claimed(session, kind, new)
    decided = _claim(session, kind, {sid: _decide(session, refs[sid], source, kind, overrides, claimed)
                                     for sid in new})
    # Assets are written in slug order, so two sources' transforms running at once
    # lock shared asset rows in the same order and cannot deadlock.
    for source_id, (slug, method) in sorted(decided.items(), key=lambda item: item[1][0]):
        known[source_id] = _alias(session, source, refs[source_id], slug, method)
    return known


def _alias(session: Session, source: str, ref: CoinRef, slug: str, method: str) -> int:
    session.execute(
        text("INSERT INTO assets (slug, symbol, name) VALUES (:slug, :symbol, :name) ON CONFLICT (slug) DO UPDATE"
             " SET symbol = coalesce(assets.symbol, EXCLUDED.symbol), name = coalesce(assets.name, EXCLUDED.name)"),
        {"slug": slug, "symbol": (ref.symbol or "").upper() or None, "name": ref.name},
    )
    asset_id = session.execute(select(Asset.id).where(Asset.slug == slug)).scalar_one()
    session.execute(
        text("INSERT INTO asset_aliases (source, source_asset_id, asset_id, symbol, name, match_method)"
             " VALUES (:source, :sid, :asset_id, :symbol, :name, :method)"
             " ON CONFLICT (source, source_asset_id) DO NOTHING"),
        {"source": source, "sid": ref.source_asset_id, "asset_id": asset_id, "symbol": ref.symbol,
         "name": ref.name, "method": method},
    )
    return asset_id


# Registers the per-kind rules into SLUG_RULES; imported last because it imports this module.
from kasparro.pipeline import slug_rules  # noqa: E402,F401
