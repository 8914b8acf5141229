"""Serve news items linked to canonical assets: GET /news."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, exists, select, tuple_

from kasparro.api.auth import read_access
from kasparro.api.base import Blueprint, keyset_page
from kasparro.api.params import NewsParams
from kasparro.api.schemas import NewsSchema, envelope
from kasparro.db import db
from kasparro.models import Asset, NewsAssetLink, NewsItem

blp = Blueprint("news", __name__, description="News items from RSS/Atom feeds, linked to the assets they mention.")

NEWS_FILTERS = ("asset", "feed", "since", "until")
# How many of an asset's latest items /assets/<slug> shows.
ASSET_NEWS = 5


def build_news_query(filters: Mapping[str, Any], limit: int, after: tuple[datetime, int] | None = None) -> Select:
    """Build the keyset query of one /news page, newest first (limit + 1 rows, to know whether more follow)."""
    query = select(NewsItem)
    if filters.get("asset"):
        query = query.where(exists().where(
            NewsAssetLink.news_item_id == NewsItem.id,
            NewsAssetLink.asset_id == select(Asset.id).where(Asset.slug == filters["asset"]).scalar_subquery()))
    if filters.get("feed"):
        query = query.where(NewsItem.feed == filters["feed"])
    if filters.get("since"):
        query = query.where(NewsItem.published_at >= filters["since"])
    if filters.get("until"):
        query = query.where(NewsItem.published_at < filters["until"])
    if after is not None:
        query = query.where(tuple_(NewsItem.published_at, NewsItem.id) < tuple_(*after))
    return query.order_by(NewsItem.published_at.desc(), NewsItem.id.desc()).limit(limit + 1)


@blp.route("/news")
@read_access
@blp.arguments(NewsParams, location="query")
@blp.response(200, envelope(NewsSchema, "NewsPage", many=True))
@blp.errors(400, 401)
def list_news(params: dict[str, Any]) -> dict[str, Any]:
    """List news items, newest first, optionally those about one asset or from one feed."""
    filters = {name: params.get(name) for name in NEWS_FILTERS}

    def fetch(after: tuple[Any, ...] | None) -> Sequence[Any]:
        return db.session.execute(build_news_query(filters, params["limit"], after)).scalars().all()

    return keyset_page("news", filters, params, (datetime, int), fetch, lambda n: (n.published_at, n.id))


def latest_for_asset(asset_id: int) -> list[dict[str, Any]]:
    """Return an asset's latest linked news items: title, link, feed, published_at, matched_by."""
    rows = db.session.execute(
        select(NewsItem.title, NewsItem.link, NewsItem.feed, NewsItem.published_at, NewsAssetLink.matched_by)
        .join(NewsAssetLink, NewsAssetLink.news_item_id == NewsItem.id).where(NewsAssetLink.asset_id == asset_id)
        .order_by(NewsItem.published_at.desc(), NewsItem.id.desc()).limit(ASSET_NEWS)
    ).all()
    return [row._asdict() for row in rows]
