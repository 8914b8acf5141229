"""Map the warehouse tables: raw layer, canonical assets, unified quotes and run bookkeeping."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from kasparro.db import db

RUN_STATUSES = ("queued", "running", "success", "partial", "failed")
SOURCE_STATUSES = ("queued", "running", "success", "partial", "failed")
# A source run in one of these finished and loaded what it read.
SUCCEEDED = ("success", "partial")
# Repair runs re-read a window or stored records: they never move a checkpoint.
REPAIR_TRIGGERS = ("reprocess", "backfill", "replay")
TRIGGERS = ("schedule", "api", "cli", *REPAIR_TRIGGERS)
# What replaying a reject did: its record validated and loaded, or was rejected again.
REPLAY_OUTCOMES = ("loaded", "rejected")
BATCH_STATES = ("extracted", "transformed", "loaded")
# What can happen to a source's part of a run besides its counters moving (see RunEvent).
EVENT_KINDS = ("retry", "busy", "interrupted", "resumed", "failed", "fault", "quality")
# The data-quality rules a finding can come from (see kasparro.pipeline.quality), and how bad a finding is.
QUALITY_RULES = ("volume", "slow_run", "price_jump", "source_disagreement", "asset_disappeared", "asset_reappeared")
SEVERITIES = ("info", "warning", "critical")
# How a batch's shape differed from what its source expects, and what the pipeline did about it (see DriftEvent).
DRIFT_KINDS = ("added", "missing", "renamed", "type_changed")
DRIFT_ACTIONS = ("mapped", "rejected", "failed", "noted")
# How a news item was found to mention an asset (see kasparro.pipeline.news_match).
LINK_METHODS = ("name", "cashtag", "ticker")


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Run(db.Model):
    """One ETL run over one or more sources."""

    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(f"status IN {RUN_STATUSES}", name="status"),
        CheckConstraint(f"trigger IN {TRIGGERS}", name="trigger"),
        Index("ix_runs_status_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    trigger: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    sources: Mapped[list[str]] = mapped_column(ARRAY(Text))
    # Non-secret source settings as they were when the run was created, so the
    # worker runs exactly what was asked and the run stays auditable.
    config: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    source_runs: Mapped[list[SourceRun]] = relationship(
        back_populates="run", order_by="SourceRun.source", lazy="selectin"
    )


class IdempotencyKey(db.Model):
    """A client's Idempotency-Key and the run it was answered with, so a retried request gets that run again."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = _now()


class SourceRun(db.Model):
    """The part of a run that concerns one source, with its counters."""

    __tablename__ = "run_sources"
    __table_args__ = (
        UniqueConstraint("run_id", "source"),
        CheckConstraint(f"status IN {SOURCE_STATUSES}", name="status"),
        # At most one active run per source, enforced by the database; also how a trigger finds
        # which runs hold a source without scanning history.
        Index("ix_run_sources_active_source", "source", unique=True,
              postgresql_where=text("status IN ('queued', 'running')")),
        # A source's recent runs, newest first (the quality rules' history).
        Index("ix_run_sources_source_id", "source", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    stage: Mapped[str | None] = mapped_column(String(16))
    extract_done: Mapped[bool] = mapped_column(Boolean, default=False)
    extracted: Mapped[int] = mapped_column(Integer, default=0)
    loaded: Mapped[int] = mapped_column(Integer, default=0)
    inserted: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    # Records whose exact payload was already received, in this run or in a loaded batch.
    duplicates: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Evidence of how the source was called (rate limits, retries).
    requests: Mapped[int] = mapped_column(Integer, default=0)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    throttled: Mapped[int] = mapped_column(Integer, default=0)
    wait_seconds: Mapped[float] = mapped_column(Numeric(12, 3), default=0)
    waits: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    longest_wait_seconds: Mapped[float] = mapped_column(Numeric(12, 3), default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # How far the read has got, as the source counts it (kasparro.sources.base.Progress), written with each
    # batch: `done` of `total` units (None when unknown), counted from `start`, where this run's read began.
    progress_unit: Mapped[str | None] = mapped_column(String(16))
    progress_start: Mapped[int | None] = mapped_column(BigInteger)
    progress_done: Mapped[int | None] = mapped_column(BigInteger)
    progress_total: Mapped[int | None] = mapped_column(BigInteger)

    run: Mapped[Run] = relationship(back_populates="source_runs")


class RawBatch(db.Model):
    """A slice of one source's extract: the unit that transform and load work on."""

    __tablename__ = "raw_batches"
    __table_args__ = (
        UniqueConstraint("run_source_id", "seq"),
        CheckConstraint(f"state IN {BATCH_STATES}", name="state"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_source_id: Mapped[int] = mapped_column(ForeignKey("run_sources.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(100))
    seq: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="extracted")
    # Where the source stands once this batch is loaded: becomes the checkpoint.
    cursor_after: Mapped[dict[str, Any]] = mapped_column(JSONB)
    received: Mapped[int] = mapped_column(Integer, default=0)
    new_records: Mapped[int] = mapped_column(Integer, default=0)
    # A reprocess batch re-stages these stored raw records (which stay in their own batches) and moves no checkpoint.
    record_ids: Mapped[list[int] | None] = mapped_column(ARRAY(BigInteger))
    # Quotes staged at transform; load compares it with quote_stage, which a PostgreSQL crash empties (UNLOGGED).
    staged: Mapped[int | None] = mapped_column(Integer)
    # Quotes the batch inserted or updated, once loaded (NULL before migration 0020): the quality rules take
    # a run's last batches that hold the newest quotes they look at.
    written: Mapped[int | None] = mapped_column(Integer)
    # A file's batch is one raw chunk (its bytes as read) instead of raw records; see pipeline/chunks.py.
    chunk_id: Mapped[int | None] = mapped_column(ForeignKey("raw_chunks.id"), index=True)
    created_at: Mapped[datetime] = _now()


class RawChunk(db.Model):
    """A batch of a file's records exactly as read, with the header they are read under; kept once per source."""

    __tablename__ = "raw_chunks"
    __table_args__ = (UniqueConstraint("source", "sha256"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    source: Mapped[str] = mapped_column(String(100))
    run_id: Mapped[int] = mapped_column(BigInteger)
    file: Mapped[str] = mapped_column(Text)
    header: Mapped[bytes] = mapped_column(LargeBinary)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    first_line: Mapped[int] = mapped_column(Integer)
    byte_start: Mapped[int] = mapped_column(BigInteger)
    byte_end: Mapped[int] = mapped_column(BigInteger)
    records: Mapped[int] = mapped_column(Integer)
    # Lines that repeat an earlier line of the chunk byte for byte: kept, but loaded once.
    repeats: Mapped[list[int]] = mapped_column(ARRAY(Integer))
    sha256: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = _now()


class RawRecord(db.Model):
    """One payload exactly as received; identical payloads are kept once per source."""

    __tablename__ = "raw_records"
    __table_args__ = (
        UniqueConstraint("source", "content_hash"),
        Index("ix_raw_records_batch_id", "batch_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    source: Mapped[str] = mapped_column(String(100))
    run_id: Mapped[int] = mapped_column(BigInteger)
    batch_id: Mapped[int] = mapped_column(ForeignKey("raw_batches.id", ondelete="CASCADE"))
    position: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    content_hash: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = _now()
    # A rejected line of a raw chunk is also kept as a record: which chunk and line it is.
    chunk_id: Mapped[int | None] = mapped_column(BigInteger)
    line: Mapped[int | None] = mapped_column(Integer)


class Asset(db.Model):
    """One real-world coin, whatever source reports it."""

    __tablename__ = "assets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(120), unique=True)
    symbol: Mapped[str | None] = mapped_column(String(40))
    name: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()

    aliases: Mapped[list[AssetAlias]] = relationship(back_populates="asset", lazy="selectin")


class AssetAlias(db.Model):
    """How one source names an asset, and how we decided it is that asset."""

    __tablename__ = "asset_aliases"
    __table_args__ = (UniqueConstraint("source", "source_asset_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(100))
    source_asset_id: Mapped[str] = mapped_column(String(200))
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id"), index=True)
    symbol: Mapped[str | None] = mapped_column(String(40))
    name: Mapped[str | None] = mapped_column(Text)
    match_method: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = _now()
    # False while the asset is missing from the source's full listing; history is never deleted.
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    inactive_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    asset: Mapped[Asset] = relationship(back_populates="aliases")


class IdSpaceSlug(db.Model):
    """The slug decided for a coin id the first time any source of its id space (a kind with a slug rule) met it.

    Every later source of that id space follows it, so which source, or which other id space, came first
    cannot put one id on two assets: the primary key is the arbiter when two transforms decide at once.
    """

    __tablename__ = "id_space_slugs"

    id_space: Mapped[str] = mapped_column(String(100), primary_key=True)
    source_asset_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    slug: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = _now()


class MarketQuote(db.Model):
    """A unified observation of one asset's market by one source at one time."""

    __tablename__ = "market_quotes"
    __table_args__ = (
        # The keys are the walks' indexes too (migration 0019): keyset pagination walks the primary key in
        # (observed_at, id) order, and one asset's quotes in observed_at order along the natural key. A
        # partitioned table's keys must hold its partition key, observed_at.
        PrimaryKeyConstraint("observed_at", "id"),
        UniqueConstraint("asset_id", "observed_at", "source"),
        CheckConstraint("price_usd >= 0", name="price_not_negative"),
        # The quality rules look at the quotes one run wrote: its rows are appended together, so block
        # ranges find them (migration 0014).
        Index("ix_market_quotes_run_id_brin", "run_id", postgresql_using="brin",
              postgresql_with={"pages_per_range": 32, "autosummarize": "on"}),
        CheckConstraint("(raw_record_id IS NULL) <> (raw_chunk_id IS NULL AND raw_line IS NULL)", name="lineage"),
        # One partition per month of observed_at, plus a DEFAULT one (migration 0017, pipeline/partitions.py).
        {"postgresql_partition_by": "RANGE (observed_at)"},
    )

    # id is named the one its sequence fills (SQLAlchemy assumes none in a key of two columns).
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    # No foreign key: the trigger `assets_keep` refuses to delete an asset with quotes (migration 0012).
    asset_id: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(100))
    observed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    price_usd: Mapped[Decimal] = mapped_column(Numeric)
    market_cap_usd: Mapped[Decimal | None] = mapped_column(Numeric)
    volume_24h_usd: Mapped[Decimal | None] = mapped_column(Numeric)
    percent_change_24h: Mapped[Decimal | None] = mapped_column(Numeric)
    # Lineage: the raw record, or the line of the raw chunk, the quote was read from (one of the two).
    raw_record_id: Mapped[int | None] = mapped_column(ForeignKey("raw_records.id"))
    raw_chunk_id: Mapped[int | None] = mapped_column(BigInteger)
    raw_line: Mapped[int | None] = mapped_column(Integer)
    run_id: Mapped[int] = mapped_column(BigInteger)
    # The raw batch that last wrote the row: one run's batches may load in any order, and a later
    # batch of the same run wins over an earlier one (see targets/quotes.py). NULL before migration 0013.
    batch_id: Mapped[int | None] = mapped_column(BigInteger)
    ingested_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    asset: Mapped[Asset] = relationship(lazy="joined", primaryjoin="foreign(MarketQuote.asset_id) == Asset.id")


class Checkpoint(db.Model):
    """How far each source has been loaded; moves only with the data it covers."""

    __tablename__ = "checkpoints"

    source: Mapped[str] = mapped_column(String(100), primary_key=True)
    cursor: Mapped[dict[str, Any]] = mapped_column(JSONB)
    run_id: Mapped[int] = mapped_column(BigInteger)
    batch_id: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = _now()


class RejectedRecord(db.Model):
    """A raw record that failed validation, with the reason."""

    __tablename__ = "rejected_records"
    __table_args__ = (
        Index("ix_rejected_records_run_source", "run_id", "source"),
        CheckConstraint(f"replay_outcome IN {REPLAY_OUTCOMES}", name="replay_outcome"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    raw_record_id: Mapped[int] = mapped_column(ForeignKey("raw_records.id"), unique=True)
    run_id: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(100))
    reason: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()
    # The last replay of this reject: when, by which run, and whether its record loaded or was rejected again.
    replayed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    replay_run_id: Mapped[int | None] = mapped_column(BigInteger)
    replay_outcome: Mapped[str | None] = mapped_column(String(16))


class RunEvent(db.Model):
    """Something that happened to a source's part of a run: a retry, a lost worker, a resume, a failure."""

    __tablename__ = "run_events"
    __table_args__ = (
        CheckConstraint(f"kind IN {EVENT_KINDS}", name="kind"),
        Index("ix_run_events_run_id_id", "run_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    run_source_id: Mapped[int | None] = mapped_column(ForeignKey("run_sources.id", ondelete="CASCADE"))
    source: Mapped[str | None] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    stage: Mapped[str | None] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()


class SourceLease(db.Model):
    """Who may run a source now; an expired lease is free, so a dead holder releases it."""

    __tablename__ = "source_leases"

    source: Mapped[str] = mapped_column(String(100), primary_key=True)
    run_id: Mapped[int] = mapped_column(BigInteger)
    # The worker process working under the lease (see kasparro.liveness); None outside a worker.
    holder: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StagedQuote(db.Model):
    """A validated quote waiting for its batch to load; emptied as the batch loads.

    UNLOGGED (no WAL): a crash empties it, and load then sends the batch back to transform (`RawBatch.staged`).
    """

    __tablename__ = "quote_stage"
    __table_args__ = (Index("ix_quote_stage_batch_id", "batch_id"),
                      Index("ux_quote_stage_raw_record_id", "raw_record_id", unique=True,
                            postgresql_where=text("raw_record_id IS NOT NULL")),
                      {"prefixes": ["UNLOGGED"]})
    # No primary key in the table: a row's lineage is a raw record or a chunk's line (see MarketQuote).
    __mapper_args__ = {"primary_key": ["batch_id", "raw_record_id", "raw_chunk_id", "raw_line"]}

    raw_record_id: Mapped[int | None] = mapped_column(BigInteger)
    raw_chunk_id: Mapped[int | None] = mapped_column(BigInteger)
    raw_line: Mapped[int | None] = mapped_column(Integer)
    batch_id: Mapped[int] = mapped_column(BigInteger)  # no foreign key: see migration 0012
    run_id: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(100))
    asset_id: Mapped[int] = mapped_column(Integer)
    observed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    price_usd: Mapped[Decimal] = mapped_column(Numeric)
    market_cap_usd: Mapped[Decimal | None] = mapped_column(Numeric)
    volume_24h_usd: Mapped[Decimal | None] = mapped_column(Numeric)
    percent_change_24h: Mapped[Decimal | None] = mapped_column(Numeric)


class Anomaly(db.Model):
    """A data-quality finding: which rule fired on which source's run, what it saw and what it expected."""

    __tablename__ = "anomalies"
    __table_args__ = (
        CheckConstraint(f"rule IN {QUALITY_RULES}", name="rule"),
        CheckConstraint(f"severity IN {SEVERITIES}", name="severity"),
        Index("ix_anomalies_run_id_id", "run_id", "id"),
        Index("ix_anomalies_source_rule_id", "source", "rule", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    run_source_id: Mapped[int] = mapped_column(ForeignKey("run_sources.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(100))
    rule: Mapped[str] = mapped_column(String(32))
    asset_id: Mapped[int | None] = mapped_column(ForeignKey("assets.id"))
    severity: Mapped[str] = mapped_column(String(16))
    observed: Mapped[Decimal | None] = mapped_column(Numeric)
    expected: Mapped[Decimal | None] = mapped_column(Numeric)
    detail: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()


class SchemaSnapshot(db.Model):
    """The shape one batch actually had: per field, records per JSON type and the numeric range."""

    __tablename__ = "schema_snapshots"
    __table_args__ = (Index("ix_schema_snapshots_source_id", "source", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    source: Mapped[str] = mapped_column(String(100))
    run_id: Mapped[int] = mapped_column(BigInteger)
    batch_id: Mapped[int] = mapped_column(ForeignKey("raw_batches.id", ondelete="CASCADE"), unique=True)
    fields: Mapped[dict[str, Any]] = mapped_column(JSONB)
    records: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = _now()


class DriftEvent(db.Model):
    """A field of a batch that differed from its source's expected schema or previous snapshot, and what was done."""

    __tablename__ = "drift_events"
    __table_args__ = (
        CheckConstraint(f"kind IN {DRIFT_KINDS}", name="kind"),
        CheckConstraint(f"action IN {DRIFT_ACTIONS}", name="action"),
        CheckConstraint("confidence BETWEEN 0 AND 1", name="confidence"),
        Index("ix_drift_events_source_id", "source", "id"),
        Index("ix_drift_events_run_source_id", "run_source_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    source: Mapped[str] = mapped_column(String(100))
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    run_source_id: Mapped[int] = mapped_column(ForeignKey("run_sources.id", ondelete="CASCADE"))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("raw_batches.id", ondelete="SET NULL"))
    field: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))
    old: Mapped[str | None] = mapped_column(Text)
    new: Mapped[str | None] = mapped_column(Text)
    confidence: Mapped[float | None] = mapped_column(Numeric(4, 3))
    action: Mapped[str] = mapped_column(String(16))
    # Records of the batch that showed it.
    records: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = _now()


class NewsFields:
    """The unified fields of a news item, shared by the staged and the loaded row."""

    # How many assets existed when the links were found: assets are never deleted, so more now means
    # the item may mention a coin that did not exist then, and is linked again.
    assets_known: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))

    source: Mapped[str] = mapped_column(String(100))
    guid: Mapped[str] = mapped_column(Text)
    feed: Mapped[str] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(Text)
    link: Mapped[str] = mapped_column(Text)
    summary: Mapped[str | None] = mapped_column(Text)
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class NewsItem(NewsFields, db.Model):
    """One news entry of a feed, unified; an edited or re-published entry updates its row."""

    __tablename__ = "news_items"
    __table_args__ = (
        UniqueConstraint("source", "guid"),
        # /news walks these newest first, for every feed or one.
        Index("ix_news_items_published_id", "published_at", "id"),
        Index("ix_news_items_feed_published_id", "feed", "published_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    raw_record_id: Mapped[int] = mapped_column(ForeignKey("raw_records.id"))
    run_id: Mapped[int] = mapped_column(BigInteger)
    ingested_at: Mapped[datetime] = _now()
    changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    links: Mapped[list[NewsAssetLink]] = relationship(lazy="selectin", order_by="NewsAssetLink.asset_id")


class NewsAssetLink(db.Model):
    """A canonical asset a news item mentions, and how the mention was recognised."""

    __tablename__ = "news_asset_links"
    __table_args__ = (
        UniqueConstraint("news_item_id", "asset_id"),
        CheckConstraint(f"matched_by IN {LINK_METHODS}", name="matched_by"),
        Index("ix_news_asset_links_asset_id_news_item_id", "asset_id", "news_item_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    news_item_id: Mapped[int] = mapped_column(ForeignKey("news_items.id", ondelete="CASCADE"))
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id"))
    matched_by: Mapped[str] = mapped_column(String(16))
    matched_text: Mapped[str] = mapped_column(Text)

    asset: Mapped[Asset] = relationship(lazy="joined")


class StagedNews(NewsFields, db.Model):
    """A validated news item waiting for its batch to load, with the asset links found in it."""

    __tablename__ = "news_stage"
    __table_args__ = (Index("ix_news_stage_batch_id", "batch_id"),)

    raw_record_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("raw_batches.id", ondelete="CASCADE"))
    run_id: Mapped[int] = mapped_column(BigInteger)
    # [{"asset_id", "matched_by", "matched_text"}]: written to news_asset_links when the item loads.
    links: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
