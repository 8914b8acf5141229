"""The news target: validate news items, link them to canonical assets, and upsert them into news_items.

An item is keyed by (source, guid): a feed re-publishing or editing an entry
updates its row, and its asset links are recomputed with it.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates
from sqlalchemy import text
from sqlalchemy.orm import Session

from kasparro.models import RawBatch, SourceRun
from kasparro.pipeline.news_match import KnownAsset, Matcher, plain_text
from kasparro.pipeline.pgcopy import copy_rows
from kasparro.pipeline.targets import Target, Valid

# Items stamped further ahead than this are clock errors; the web's news does not predate 1995.
FUTURE_TOLERANCE = timedelta(days=1)
EARLIEST = datetime(1995, 1, 1, tzinfo=timezone.utc)
# Far above any real headline or teaser, so an absurd entry is rejected rather than stored.
MAX_TITLE, MAX_SUMMARY, MAX_LINK, MAX_GUID = 1000, 20_000, 2000, 1000

STAGE_COLUMNS = ("raw_record_id", "batch_id", "run_id", "source", "guid", "feed", "title", "link", "summary",
                 "published_at", "updated_at", "links", "assets_known")
# Items relinked per load task at most, so the transaction stays short; the next run takes the rest.
RELINK_LIMIT = 1000


class NewsItemSchema(Schema):
    """A news item in unified fields, as a feed source maps it."""

    class Meta:
        unknown = EXCLUDE

    guid = fields.String(required=True, validate=validate.Length(min=1, max=MAX_GUID))
    title = fields.String(required=True, validate=validate.Length(min=1, max=MAX_TITLE))
    link = fields.Url(required=True, schemes={"http", "https"}, validate=validate.Length(max=MAX_LINK))
    summary = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=MAX_SUMMARY))
    published_at = fields.AwareDateTime(required=True, default_timezone=timezone.utc)
    updated_at = fields.AwareDateTime(load_default=None, allow_none=True, default_timezone=timezone.utc)
    feed = fields.String(required=True, validate=validate.Length(min=1, max=200))

    @validates("published_at")
    def _plausible_time(self, value: datetime, **_: Any) -> None:
        if value < EARLIEST or value > datetime.now(timezone.utc) + FUTURE_TOLERANCE:
            raise ValidationError("publication time is outside the plausible range")


news_schema = NewsItemSchema()

_KNOWN_ASSETS = text(
    """
    SELECT a.id, array_remove(array_agg(DISTINCT al.name) || a.name, NULL) AS names,
           array_remove(array_agg(DISTINCT upper(al.symbol)) || upper(a.symbol), NULL) AS tickers
    FROM assets a LEFT JOIN asset_aliases al ON al.asset_id = a.id
    GROUP BY a.id
    """
)

# DISTINCT ON: a batch may hold two versions of one guid; the later record wins.
# The WHERE keeps an identical reload from touching the row (0 updated).
_UPSERT = text(
    """
    WITH staged AS (
        SELECT DISTINCT ON (guid) * FROM news_stage WHERE batch_id = :batch_id
        ORDER BY guid, raw_record_id DESC
    )
    INSERT INTO news_items AS n (source, guid, feed, title, link, summary, published_at, updated_at,
                                 raw_record_id, run_id, assets_known)
    SELECT source, guid, feed, title, link, summary, published_at, updated_at, raw_record_id, run_id, assets_known
    FROM staged
    ON CONFLICT (source, guid) DO UPDATE SET
        feed = EXCLUDED.feed, title = EXCLUDED.title, link = EXCLUDED.link, summary = EXCLUDED.summary,
        published_at = EXCLUDED.published_at, updated_at = EXCLUDED.updated_at,
        raw_record_id = EXCLUDED.raw_record_id, run_id = EXCLUDED.run_id, assets_known = EXCLUDED.assets_known,
        changed_at = now()
    WHERE (n.feed, n.title, n.link, n.summary, n.published_at, n.updated_at)
          IS DISTINCT FROM (EXCLUDED.feed, EXCLUDED.title, EXCLUDED.link, EXCLUDED.summary,
                            EXCLUDED.published_at, EXCLUDED.updated_at)
    RETURNING n.id, (xmax = 0) AS inserted
    """
)

# Links of the items just written are replaced by those staged with them: an edit may add or drop a coin.
# Two statements: a CTE's DELETE is not yet seen by the INSERT's unique check in the same statement.
_UNLINK = text("DELETE FROM news_asset_links WHERE news_item_id = ANY(:ids)")
_RELINK = text(
    """
    INSERT INTO news_asset_links (news_item_id, asset_id, matched_by, matched_text)
    SELECT n.id, (l->>'asset_id')::int, l->>'matched_by', l->>'matched_text'
    FROM news_items n JOIN news_stage s ON s.raw_record_id = n.raw_record_id,
         jsonb_array_elements(s.links) AS l
    WHERE n.id = ANY(:ids) AND s.batch_id = :batch_id
    """
)


# Items linked when fewer assets existed than now, oldest first. A source's load tasks run at once, each
# relinking at its end: SKIP LOCKED so two relinks take disjoint items, and pass over an item a load is
# writing (its upsert holds the row until its own relink commits). The lock is held until commit, so no
# other transaction replaces these items' links between our DELETE and INSERT: each is linked exactly once.
_STALE = text(
    """
    SELECT id, title, summary FROM news_items
    WHERE source = :source AND assets_known < :known ORDER BY id LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)
_LINK = text("INSERT INTO news_asset_links (news_item_id, asset_id, matched_by, matched_text)"
             " VALUES (:news_item_id, :asset_id, :matched_by, :matched_text)")


def known_assets(session: Session) -> list[KnownAsset]:
    """Return every canonical asset with the names and tickers any source knows it by."""
    return [KnownAsset(row.id, tuple(row.names), tuple(row.tickers)) for row in session.execute(_KNOWN_ASSETS)]


def validate_item(fields_: dict[str, Any]) -> dict[str, Any]:
    """Validate a news item's unified fields; raise ValidationError naming what is wrong."""
    return news_schema.load(fields_)


def stage(session: Session, batch: RawBatch, source_run: SourceRun, kind: str,
          overrides: Mapping[tuple[str, str], str], items: Valid) -> None:
    """Find the assets each item mentions and stage the items of a batch with their links."""
    assets = known_assets(session)
    matcher = Matcher(assets)
    copy_rows(session, "news_stage", STAGE_COLUMNS, (
        (rid, batch.id, source_run.run_id, source_run.source, item["guid"], item["feed"], item["title"],
         item["link"], item["summary"], item["published_at"].isoformat(),
         item["updated_at"].isoformat() if item["updated_at"] else None,
         json.dumps([asdict(link) for link in matcher.links(plain_text(item["title"], item["summary"]))]),
         len(assets))
        for rid, item in items
    ))


def load(session: Session, batch_id: int) -> tuple[int, int, int]:
    """Upsert a batch's staged items and relink those written; return (inserted, updated, staged)."""
    written = session.execute(_UPSERT, {"batch_id": batch_id}).all()
    if written:
        session.execute(_UNLINK, {"ids": [row.id for row in written]})
        session.execute(_RELINK, {"ids": [row.id for row in written], "batch_id": batch_id})
    staged = session.execute(text("SELECT count(*) FROM news_stage WHERE batch_id = :b"), {"b": batch_id}).scalar()
    inserted = sum(1 for row in written if row.inserted)
    return inserted, len(written) - inserted, staged


def relink_stale(session: Session, source: str) -> int:
    """Link again the source's items found before some asset existed; return how many were relinked.

    News and quote sources run side by side, so an item may be linked before a
    quote source has created the asset it mentions; the next load picks it up.
    """
    assets = known_assets(session)
    stale = session.execute(_STALE, {"source": source, "known": len(assets), "limit": RELINK_LIMIT}).all()
    if not stale:
        return 0
    matcher = Matcher(assets)
    ids = [row.id for row in stale]
    session.execute(_UNLINK, {"ids": ids})
    links = [{"news_item_id": row.id, **asdict(link)} for row in stale
             for link in matcher.links(plain_text(row.title, row.summary))]
    if links:
        session.execute(_LINK, links)
    session.execute(text("UPDATE news_items SET assets_known = :known WHERE id = ANY(:ids)"),
                    {"known": len(assets), "ids": ids})
    return len(ids)


TARGET = Target("news", "news_stage", validate_item, stage, load, relink_stale)
