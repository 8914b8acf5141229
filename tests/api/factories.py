"""Insert assets, runs, raw records, quotes and rejects straight into the migrated schema for read tests."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import text

from kasparro.db import db
from kasparro.models import (
    Anomaly,
    Asset,
    AssetAlias,
    MarketQuote,
    NewsAssetLink,
    NewsItem,
    RawBatch,
    RawRecord,
    RejectedRecord,
    Run,
    SourceRun,
)

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def asset(slug: str, symbol: str | None = None, name: str | None = None, **aliases: str) -> Asset:
    """Create an asset, with an alias per `source=source_asset_id` keyword."""
    row = Asset(slug=slug, symbol=symbol or slug[:3].upper(), name=name or slug.title())
    db.session.add(row)
    db.session.flush()
    for source, source_asset_id in aliases.items():
        db.session.add(AssetAlias(source=source, source_asset_id=source_asset_id, asset_id=row.id,
                                  symbol=row.symbol, name=row.name, match_method="exact_id"))
    db.session.flush()
    return row


def run(status: str = "success", sources: tuple[str, ...] = ("csv",), trigger: str = "api",
        started: datetime | None = T0, seconds: float = 10, **counters: Any) -> Run:
    """Create a run with one source run per source, each carrying `counters`."""
    finished = started + timedelta(seconds=seconds) if started and status not in ("queued", "running") else None
    row = Run(trigger=trigger, status=status, sources=list(sources), config={}, started_at=started,
              finished_at=finished)
    source_status = counters.pop("source_status", status)
    row.source_runs = [SourceRun(source=s, status=source_status, started_at=started, finished_at=finished,
                                 **{"extracted": 0, "loaded": 0, "inserted": 0, "updated": 0, "skipped": 0,
                                    "rejected": 0, "requests": 0, "retries": 0, "throttled": 0,
                                    "wait_seconds": 0, **counters})
                       for s in sources]
    db.session.add(row)
    db.session.flush()
    return row


def batch(source_run: SourceRun, seq: int = 0, state: str = "loaded") -> RawBatch:
    """Create a raw batch of a source run."""
    row = RawBatch(run_source_id=source_run.id, source=source_run.source, seq=seq, state=state, cursor_after={})
    db.session.add(row)
    db.session.flush()
    return row


def raw(batch_row: RawBatch, payload: dict[str, Any], position: str = "line 2") -> RawRecord:
    """Create a raw record in a batch."""
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    source_run = db.session.get(SourceRun, batch_row.run_source_id)
    row = RawRecord(source=batch_row.source, run_id=source_run.run_id, batch_id=batch_row.id, position=position,
                    payload=payload, content_hash=digest)
    db.session.add(row)
    db.session.flush()
    return row


def quote(asset_row: Asset, batch_row: RawBatch, observed_at: datetime, price: float = 100.0,
          **values: Any) -> MarketQuote:
    """Create a quote with its raw record, written by `batch_row` as a load writes it."""
    record = raw(batch_row, {"asset": asset_row.slug, "at": observed_at.isoformat(), "price": price})
    source_run = db.session.get(SourceRun, batch_row.run_source_id)
    row = MarketQuote(asset_id=asset_row.id, source=batch_row.source, observed_at=observed_at,
                      price_usd=Decimal(str(price)), raw_record_id=record.id, run_id=source_run.run_id,
                      **{"batch_id": batch_row.id, **values})
    db.session.add(row)
    db.session.flush()
    return row


def reject(batch_row: RawBatch, payload: dict[str, Any], reason: dict[str, Any], position: str) -> RejectedRecord:
    """Create a rejected record with its raw record."""
    record = raw(batch_row, payload, position)
    row = RejectedRecord(raw_record_id=record.id, run_id=record.run_id, source=record.source, reason=reason)
    db.session.add(row)
    db.session.flush()
    return row


def bulk_quotes(count: int, assets: int = 20, source: str = "bulk") -> None:
    """Insert `count` quotes over `assets` assets, one minute apart, with generate_series."""
    run_row = run(sources=(source,))
    batch_row = batch(run_row.source_runs[0])
    db.session.execute(text(
        "INSERT INTO assets (slug, symbol, name) SELECT 'coin-' || i, 'C' || i, 'Coin ' || i"
        " FROM generate_series(1, :n) AS i ON CONFLICT (slug) DO NOTHING"), {"n": assets})
    db.session.execute(text(
        "INSERT INTO raw_records (source, run_id, batch_id, position, payload, content_hash)"
        " SELECT :source, :run, :batch, 'line ' || i, jsonb_build_object('i', i), md5(i::text)"
        " FROM generate_series(1, :n) AS i"), {"source": source, "run": run_row.id, "batch": batch_row.id, "n": count})
    db.session.execute(text(
        "INSERT INTO market_quotes (asset_id, source, observed_at, price_usd, market_cap_usd, volume_24h_usd,"
        " raw_record_id, run_id)"
        " SELECT a.id, :source, :t0 + make_interval(mins => r.i), 100 + r.i, NULL, 1000, r.id, :run"
        " FROM (SELECT id, (payload->>'i')::int AS i FROM raw_records WHERE batch_id = :batch) AS r"
        " JOIN assets a ON a.slug = 'coin-' || (1 + r.i % :assets)"),
        {"source": source, "run": run_row.id, "batch": batch_row.id, "t0": T0, "assets": assets})
    db.session.execute(text("ANALYZE market_quotes"))


def finding(source_run: SourceRun, rule: str = "volume", asset_row: Asset | None = None, severity: str = "warning",
            observed: float | None = 1, expected: float | None = 4, at: datetime | None = None) -> Anomaly:
    """Record a quality finding on a source run."""
    row = Anomaly(run_id=source_run.run_id, run_source_id=source_run.id, source=source_run.source, rule=rule,
                  asset_id=asset_row.id if asset_row else None, severity=severity, observed=observed,
                  expected=expected, detail=f"{rule} on {source_run.source}")
    if at is not None:
        row.created_at = at
    db.session.add(row)
    db.session.flush()
    return row


def news(batch_row: RawBatch, guid: str, published_at: datetime, title: str = "A headline", feed: str = "wire",
         links: tuple[tuple[Asset, str, str], ...] = ()) -> NewsItem:
    """Create a news item with its raw record, linked to (asset, matched_by, matched_text) triples."""
    record = raw(batch_row, {"guid": guid, "title": title}, f"entry#{guid}")
    row = NewsItem(source=batch_row.source, guid=guid, feed=feed, title=title, link=f"https://news.example.org/{guid}",
                   summary=None, published_at=published_at, raw_record_id=record.id, run_id=record.run_id)
    db.session.add(row)
    db.session.flush()
    for asset_row, matched_by, matched_text in links:
        db.session.add(NewsAssetLink(news_item_id=row.id, asset_id=asset_row.id, matched_by=matched_by,
                                     matched_text=matched_text))
    db.session.flush()
    return row
