"""Serve unified quotes and canonical assets: GET /data, /data/latest, /assets, /assets/<slug> (with its news)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, func, or_, select, true, tuple_
from sqlalchemy.orm import aliased

from kasparro.api.auth import read_access
from kasparro.api.base import Blueprint, keyset_page
from kasparro.api.envelope import single
from kasparro.api.errors import ApiError
from kasparro.api.news import latest_for_asset
from kasparro.api.params import AssetParams, LatestParams, NoParams, QuoteParams
from kasparro.api.schemas import AssetDetailSchema, AssetSchema, QuoteSchema, envelope
from kasparro.db import db
from kasparro.models import Asset, MarketQuote

blp = Blueprint("data", __name__, description="Unified market quotes and canonical assets.")

QUOTE_FILTERS = ("asset", "symbol", "source", "since", "until", "sort")
LATEST_COLUMNS = ("id", "source", "observed_at", "price_usd", "market_cap_usd", "volume_24h_usd",
                  "percent_change_24h", "raw_record_id", "raw_chunk_id", "raw_line", "run_id", "ingested_at")


def _quote_columns() -> tuple[Any, ...]:
    return (MarketQuote.id, Asset.slug.label("asset"), Asset.symbol, Asset.name,
            *(getattr(MarketQuote, name) for name in LATEST_COLUMNS[1:]))


def quote_filters(params: Mapping[str, Any]) -> dict[str, Any]:
    """Return the filters and sort that define a /data listing (what its cursors are bound to)."""
    filters = {name: params.get(name) for name in QUOTE_FILTERS}
    if filters["symbol"]:
        filters["symbol"] = filters["symbol"].upper()
    filters["sort"] = filters["sort"] or "-observed_at"
    return filters


def build_quotes_query(filters: Mapping[str, Any], limit: int, after: tuple[datetime, int] | None = None) -> Select:
    """Build the keyset query of one /data page (limit + 1 rows, to know whether more follow)."""
    by_slug = aliased(Asset)
    query = select(*_quote_columns()).join(Asset, Asset.id == MarketQuote.asset_id)
    if filters.get("asset"):
        # A scalar subquery keeps the natural key (asset_id, observed_at, source) usable for the walk.
        query = query.where(MarketQuote.asset_id == select(by_slug.id).where(by_slug.slug == filters["asset"])
                            .scalar_subquery())
    if filters.get("symbol"):
        query = query.where(MarketQuote.asset_id.in_(
            select(by_slug.id).where(func.upper(by_slug.symbol) == filters["symbol"])))
    if filters.get("source"):
        query = query.where(MarketQuote.source == filters["source"])
    if filters.get("since"):
        query = query.where(MarketQuote.observed_at >= filters["since"])
    if filters.get("until"):
        query = query.where(MarketQuote.observed_at < filters["until"])
    key = tuple_(MarketQuote.observed_at, MarketQuote.id)
    # The bound on observed_at alone says nothing the row comparison does not, but PostgreSQL prunes the
    # monthly partitions by it (not by a row comparison): the months already paged past are not read at all.
    if filters.get("sort") == "observed_at":
        if after is not None:
            query = query.where(key > tuple_(*after), MarketQuote.observed_at >= after[0])
        return query.order_by(MarketQuote.observed_at.asc(), MarketQuote.id.asc()).limit(limit + 1)
    if after is not None:
        query = query.where(key < tuple_(*after), MarketQuote.observed_at <= after[0])
    return query.order_by(MarketQuote.observed_at.desc(), MarketQuote.id.desc()).limit(limit + 1)


@blp.route("/data")
@read_access
@blp.arguments(QuoteParams, location="query")
@blp.response(200, envelope(QuoteSchema, "QuotePage", many=True))
@blp.errors(400, 401)
def list_quotes(params: dict[str, Any]) -> dict[str, Any]:
    """List unified quotes, newest first by default, one keyset page at a time."""
    filters = quote_filters(params)
    return keyset_page(
        "data", filters, params, (datetime, int),
        lambda after: db.session.execute(build_quotes_query(filters, params["limit"], after)).all(),
        lambda r: (r.observed_at, r.id), convert=_as_dict)


def _as_dict(row: Row[Any]) -> dict[str, Any]:
    # marshmallow reads a dict by key; a Row costs it a failed lookup per field.
    return row._asdict()


@blp.route("/data/latest")
@read_access
@blp.arguments(LatestParams, location="query")
@blp.response(200, envelope(QuoteSchema, "LatestQuotePage", many=True))
@blp.errors(400, 401)
def latest_quotes(params: dict[str, Any]) -> dict[str, Any]:
    """List each asset's latest quote (optionally from one source), by asset slug."""
    filters = {"source": params.get("source")}
    quote = aliased(MarketQuote)
    # One index probe per asset instead of DISTINCT ON over the whole table.
    newest = select(*(getattr(quote, name) for name in LATEST_COLUMNS)).where(quote.asset_id == Asset.id)
    if filters["source"]:
        newest = newest.where(quote.source == filters["source"])
    latest = newest.order_by(quote.observed_at.desc(), quote.id.desc()).limit(1).lateral("latest")
    columns = [latest.c[name] for name in LATEST_COLUMNS]
    query = select(columns[0], Asset.slug.label("asset"), Asset.symbol, Asset.name, *columns[1:]) \
        .select_from(Asset).join(latest, true())
    query = query.order_by(Asset.slug).limit(params["limit"] + 1)

    def fetch(after: tuple[Any, ...] | None) -> Sequence[Any]:
        return db.session.execute(query if after is None else query.where(Asset.slug > after[0])).all()

    return keyset_page("latest", filters, params, (str,), fetch, lambda r: (r.asset,), convert=_as_dict)


@blp.route("/assets")
@read_access
@blp.arguments(AssetParams, location="query")
@blp.response(200, envelope(AssetSchema, "AssetPage", many=True))
@blp.errors(400, 401)
def list_assets(params: dict[str, Any]) -> dict[str, Any]:
    """List canonical assets by slug, optionally those with one symbol or matching a search term."""
    filters = {"symbol": (params.get("symbol") or "").upper() or None, "q": (params.get("q") or "").lower() or None}
    query = build_assets_query(filters).limit(params["limit"] + 1)

    def fetch(after: tuple[Any, ...] | None) -> Sequence[Any]:
        return db.session.execute(query if after is None else query.where(Asset.slug > after[0])).scalars().all()

    return keyset_page("assets", filters, params, (str,), fetch, lambda a: (a.slug,))


def build_assets_query(filters: Mapping[str, Any]) -> Select:
    """Build the /assets query in slug order, filtered by symbol and by a name or slug substring."""
    query = select(Asset).order_by(Asset.slug)
    if filters.get("symbol"):
        query = query.where(func.upper(Asset.symbol) == filters["symbol"])
    if filters.get("q"):
        # The term is text to find, not a LIKE pattern: its % and _ match only themselves.
        pattern = "%" + filters["q"].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(or_(Asset.name.ilike(pattern, escape="\\"), Asset.slug.ilike(pattern, escape="\\")))
    return query


@blp.route("/assets/<string:slug>")
@read_access
@blp.arguments(NoParams, location="query")
@blp.response(200, envelope(AssetDetailSchema, "AssetResponse"))
@blp.errors(400, 401, 404)
def get_asset(_: dict[str, Any], slug: str) -> dict[str, Any]:
    """Show one asset with its per-source aliases, which sources have quotes for it, and its latest news."""
    return single(asset_detail(slug))


def find_asset(slug: str) -> Asset:
    """Load an asset by slug or answer 404."""
    asset = db.session.execute(select(Asset).where(Asset.slug == slug)).scalar_one_or_none() \
        if "\x00" not in slug else None
    if asset is None:
        raise ApiError(404, "not_found", f"no asset with slug {slug!r}")
    return asset


def asset_detail(slug: str) -> dict[str, Any]:
    """Return an asset with its aliases per source and each source's quote count and time span."""
    asset = find_asset(slug)
    quote_sources = db.session.execute(
        select(MarketQuote.source, func.count().label("quotes"),
               func.min(MarketQuote.observed_at).label("first_observed_at"),
               func.max(MarketQuote.observed_at).label("last_observed_at"))
        .where(MarketQuote.asset_id == asset.id).group_by(MarketQuote.source).order_by(MarketQuote.source)
    ).all()
    aliases = sorted(asset.aliases, key=lambda a: (a.source, a.source_asset_id))
    return {"id": asset.id, "slug": asset.slug, "symbol": asset.symbol, "name": asset.name,
            "created_at": asset.created_at, "aliases": aliases, "quote_sources": quote_sources,
            "news": latest_for_asset(asset.id)}
