"""Marshmallow schemas of every API response; the OpenAPI document is generated from them."""
from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields

COUNTERS = ("extracted", "loaded", "inserted", "updated", "skipped", "rejected", "duplicates")
CALLS = ("requests", "retries", "throttled")


def _nullable_dt(description: str) -> fields.DateTime:
    return fields.DateTime(allow_none=True, metadata={"description": description})


class MetaSchema(Schema):
    request_id = fields.String(required=True, metadata={"description": "Echoes X-Request-ID."})
    api_latency_ms = fields.Float(required=True, metadata={"description": "Server time spent on the request."})


class ListMetaSchema(MetaSchema):
    filters = fields.Dict(required=True, metadata={"description": "The filters and sort applied."})
    limit = fields.Integer(required=True)
    next_cursor = fields.String(allow_none=True, required=True,
                                metadata={"description": "Pass as ?cursor= for the next page; null on the last."})
    has_more = fields.Boolean(required=True)


class ErrorBodySchema(Schema):
    code = fields.String(required=True, metadata={"description": "Stable machine-readable code, e.g. "
                                                  "bad_request, validation_error, unauthorized, not_found."})
    message = fields.String(required=True)
    fields_ = fields.Dict(data_key="fields", metadata={"description": "Per-field messages (validation errors)."})


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBodySchema, required=True)
    meta = fields.Nested(MetaSchema, required=True)


class QuoteSchema(Schema):
    id = fields.Integer(required=True)
    asset = fields.String(required=True, metadata={"description": "Canonical asset slug."})
    symbol = fields.String(allow_none=True)
    name = fields.String(allow_none=True)
    source = fields.String(required=True)
    observed_at = fields.DateTime(required=True)
    price_usd = fields.Float(required=True)
    market_cap_usd = fields.Float(allow_none=True)
    volume_24h_usd = fields.Float(allow_none=True)
    percent_change_24h = fields.Float(allow_none=True)
    raw_record_id = fields.Integer(required=True, allow_none=True, metadata={
        "description": "Lineage: the raw record the quote was read from (null when it was read from a file's raw chunk)."})
    raw_chunk_id = fields.Integer(required=True, allow_none=True, metadata={
        "description": "Lineage for a file: the raw chunk holding the line as received (GET /raw/chunks/{id}/lines/{line})."})
    raw_line = fields.Integer(required=True, allow_none=True, metadata={"description": "Lineage for a file: the line."})
    run_id = fields.Integer(required=True, metadata={"description": "The run that last wrote this quote."})
    ingested_at = fields.DateTime(required=True)


class RawLineSchema(Schema):
    source = fields.String(required=True)
    file = fields.String(required=True)
    chunk_id = fields.Integer(required=True)
    line = fields.Integer(required=True, metadata={"description": "The line's number in the file."})
    header = fields.String(required=True, metadata={"description": "The header line the chunk was read under."})
    text = fields.String(required=True, metadata={"description": "The line exactly as received, without its line break."})
    byte_start = fields.Integer(required=True, metadata={"description": "Where the chunk began in the file."})
    sha256 = fields.String(required=True, metadata={"description": "The chunk's hash (header and lines), hex."})
    received_at = fields.DateTime(required=True)


class AssetSchema(Schema):
    slug = fields.String(required=True)
    symbol = fields.String(allow_none=True)
    name = fields.String(allow_none=True)
    created_at = fields.DateTime(required=True)


class AliasSchema(Schema):
    source = fields.String(required=True)
    source_asset_id = fields.String(required=True)
    symbol = fields.String(allow_none=True)
    name = fields.String(allow_none=True)
    match_method = fields.String(required=True)


class QuoteSourceSchema(Schema):
    source = fields.String(required=True)
    quotes = fields.Integer(required=True)
    first_observed_at = fields.DateTime(required=True)
    last_observed_at = fields.DateTime(required=True)


class NewsLinkSchema(Schema):
    asset = fields.String(required=True, attribute="asset.slug", metadata={"description": "Canonical asset slug."})
    symbol = fields.String(allow_none=True, attribute="asset.symbol")
    matched_by = fields.String(required=True, metadata={"description": "name, cashtag ($TICKER) or ticker."})
    matched_text = fields.String(required=True, metadata={"description": "The words in the item that matched."})


class NewsSchema(Schema):
    id = fields.Integer(required=True)
    source = fields.String(required=True)
    feed = fields.String(required=True)
    guid = fields.String(required=True)
    title = fields.String(required=True)
    link = fields.String(required=True)
    summary = fields.String(allow_none=True)
    published_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(allow_none=True, metadata={"description": "When the feed says it last changed."})
    assets = fields.List(fields.Nested(NewsLinkSchema), required=True, attribute="links",
                         metadata={"description": "Canonical assets the item mentions, and how each was matched."})
    raw_record_id = fields.Integer(required=True, metadata={"description": "Lineage: the raw payload row."})
    run_id = fields.Integer(required=True, metadata={"description": "The run that last wrote this item."})
    ingested_at = fields.DateTime(required=True)
    changed_at = _nullable_dt("When an edit or re-publication last changed this item.")


class AssetNewsSchema(Schema):
    title = fields.String(required=True)
    link = fields.String(required=True)
    feed = fields.String(required=True)
    published_at = fields.DateTime(required=True)
    matched_by = fields.String(required=True)


class AssetDetailSchema(AssetSchema):
    aliases = fields.List(fields.Nested(AliasSchema), required=True)
    quote_sources = fields.List(fields.Nested(QuoteSourceSchema), required=True,
                                metadata={"description": "Sources that have quotes for this asset."})
    news = fields.List(fields.Nested(AssetNewsSchema), required=True,
                       metadata={"description": "The latest news items that mention this asset (see /news)."})


class CountsSchema(Schema):
    extracted = fields.Integer(required=True)
    loaded = fields.Integer(required=True)
    inserted = fields.Integer(required=True)
    updated = fields.Integer(required=True)
    skipped = fields.Integer(required=True, metadata={"description": "Valid rows that changed nothing on load."})
    rejected = fields.Integer(required=True)
    duplicates = fields.Integer(required=True, metadata={"description": "Rows whose exact payload was already "
                                                         "received; extracted = loaded + rejected + duplicates + "
                                                         "skipped."})


class RunSchema(Schema):
    id = fields.Integer(required=True)
    trigger = fields.String(required=True)
    status = fields.String(required=True)
    sources = fields.List(fields.String(), required=True)
    error = fields.String(allow_none=True)
    created_at = fields.DateTime(required=True)
    started_at = _nullable_dt("When a worker first picked it up.")
    finished_at = _nullable_dt("When the last source finished.")
    duration_seconds = fields.Float(allow_none=True, metadata={"description": "So far, while running."})
    totals = fields.Nested(CountsSchema, required=True)


class ProgressSchema(Schema):
    batches_extracted = fields.Integer(required=True, metadata={"description": "Batches read from the source."})
    batches_transformed = fields.Integer(required=True, metadata={"description": "Of those, validated."})
    batches_loaded = fields.Integer(required=True, metadata={"description": "Of those, loaded."})
    stage = fields.String(required=True, metadata={"description": "queued, extract, transform, load, or done "
                                                   "once the source's part of the run ended."})
    unit = fields.String(allow_none=True, required=True, metadata={
        "description": "What the source counts its read in: bytes (CSV, JSON files), pages (paged APIs) or records; "
                       "null before the first batch."})
    done = fields.Integer(allow_none=True, required=True, metadata={
        "description": "Units read in this run (from where the read began: a CSV's checkpoint offset)."})
    total = fields.Integer(allow_none=True, required=True, metadata={
        "description": "Units to read in this run, where the source knows: the file's size, max_pages, the "
                       "listing's new records."})
    percent = fields.Float(allow_none=True, required=True, metadata={"description": "done / total, in %."})
    eta_seconds = fields.Float(allow_none=True, required=True, metadata={
        "description": "Seconds until the read ends, elapsed × remaining / done; null unless running, something "
                       "was read and the total is known."})


class SourceRunSchema(CountsSchema):
    source = fields.String(required=True)
    status = fields.String(required=True)
    stage = fields.String(allow_none=True)
    requests = fields.Integer(required=True)
    retries = fields.Integer(required=True)
    throttled = fields.Integer(required=True, metadata={"description": "Responses with HTTP 429."})
    wait_seconds = fields.Float(required=True, metadata={"description": "Time spent waiting on rate limits."})
    waits = fields.Integer(required=True, metadata={"description": "How many times it waited (budget, "
                                                                   "Retry-After or retry backoff)."})
    longest_wait_seconds = fields.Float(required=True, metadata={"description": "The longest single wait."})
    error = fields.String(allow_none=True)
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    duration_seconds = fields.Float(allow_none=True)
    progress = fields.Nested(ProgressSchema, required=True)


class RunEventSchema(Schema):
    source = fields.String(allow_none=True)
    kind = fields.String(required=True, metadata={"description": "retry, busy (waited for another run's lease), "
                                                  "interrupted (its worker was lost), resumed, failed, fault or quality "
                                                  "(a data-quality rule failed and checked nothing)."})
    stage = fields.String(allow_none=True)
    detail = fields.String(required=True)
    at = fields.DateTime(required=True)


class QualityFindingSchema(Schema):
    id = fields.Integer(required=True)
    run_id = fields.Integer(required=True)
    source = fields.String(required=True)
    rule = fields.String(required=True, metadata={"description": "The rule that fired: volume, slow_run, "
                                                  "price_jump, source_disagreement, asset_disappeared or "
                                                  "asset_reappeared."})
    asset = fields.String(allow_none=True, required=True, metadata={"description": "Canonical asset slug, for "
                                                                    "rules about one asset."})
    severity = fields.String(required=True, metadata={"description": "info, warning or critical."})
    observed = fields.Float(allow_none=True, required=True, metadata={"description": "What the rule saw."})
    expected = fields.Float(allow_none=True, required=True, metadata={"description": "What it compared with: "
                                                                      "a median or the previous price."})
    detail = fields.String(required=True)
    created_at = fields.DateTime(required=True)


class DriftEventSchema(Schema):
    id = fields.Integer(required=True)
    source = fields.String(required=True)
    run_id = fields.Integer(required=True)
    batch_id = fields.Integer(allow_none=True)
    field = fields.String(required=True, metadata={"description": "The expected field (the new one when added)."})
    kind = fields.String(required=True, metadata={"description": "added, missing, renamed or type_changed."})
    old = fields.String(allow_none=True, metadata={"description": "Expected name, or the expected type(s)."})
    new = fields.String(allow_none=True, metadata={"description": "Name or type found in the batch."})
    confidence = fields.Float(allow_none=True, metadata={"description": "A rename's confidence, 0 to 1."})
    action = fields.String(required=True, metadata={"description": "mapped (evolve applied the rename), rejected "
                                                    "(its records failed validation), failed (freeze), noted."})
    records = fields.Integer(required=True, metadata={"description": "Records of the batch that showed it."})
    created_at = fields.DateTime(required=True)


class DriftSummarySchema(Schema):
    source = fields.String(required=True)
    field = fields.String(required=True)
    kind = fields.String(required=True)
    old = fields.String(allow_none=True)
    new = fields.String(allow_none=True)
    confidence = fields.Float(allow_none=True, metadata={"description": "The highest confidence seen."})
    action = fields.String(required=True)
    events = fields.Integer(required=True, metadata={"description": "Batches that showed it."})
    records = fields.Integer(required=True)


class RunDetailSchema(RunSchema):
    source_runs = fields.List(fields.Nested(SourceRunSchema), required=True)
    drift = fields.List(fields.Nested(DriftSummarySchema), required=True,
                        metadata={"description": "Schema drift met by the run, per source and finding (at most "
                                                 "200, by source and field; every event in /drift?since=); a source "
                                                 "with drift ends partial at best."})
    drift_total = fields.Integer(required=True, metadata={"description": "Lines of drift the run met, listed or "
                                                                           "not."})
    events = fields.List(fields.Nested(RunEventSchema), required=True,
                         metadata={"description": "The run's history besides its counters, oldest first (at most "
                                                  "200): retries, lost workers, resumes, failures."})
    anomalies = fields.List(fields.Nested(QualityFindingSchema), required=True,
                            metadata={"description": "What the data-quality rules found in this run, newest "
                                                     "first (at most 200; all of them in /anomalies?run_id=)."})


class BusySourceSchema(Schema):
    source = fields.String(required=True)
    run_id = fields.Integer(required=True, metadata={"description": "The active run that holds this source."})


class RunCreatedSchema(Schema):
    run_id = fields.Integer(required=True)
    status = fields.String(required=True)
    sources = fields.List(fields.String(), required=True, metadata={"description": "The sources this run covers."})
    created = fields.Boolean(required=True, metadata={"description": "False when an active or idempotent "
                                                      "run was returned instead of a new one."})
    busy = fields.List(fields.Nested(BusySourceSchema), required=True,
                       metadata={"description": "Sources asked for but left out: another active run holds them. "
                                                "The free ones are run; these are not held back by them."})


class SideSchema(CountsSchema):
    status = fields.String(required=True)
    duration_seconds = fields.Float(allow_none=True)
    error = fields.String(allow_none=True)


class DeltaSchema(CountsSchema):
    duration_seconds = fields.Float(allow_none=True)


class SourceComparisonSchema(Schema):
    source = fields.String(required=True)
    a = fields.Nested(SideSchema, allow_none=True, required=True)
    b = fields.Nested(SideSchema, allow_none=True, required=True)
    delta = fields.Nested(DeltaSchema, allow_none=True, required=True, metadata={"description": "b minus a."})
    status_changed = fields.Boolean(required=True)


class AnomalySchema(Schema):
    source = fields.String(required=True)
    kind = fields.String(required=True)
    message = fields.String(required=True)


class RecordedAnomaliesSchema(Schema):
    a = fields.List(fields.Nested(QualityFindingSchema), required=True)
    b = fields.List(fields.Nested(QualityFindingSchema), required=True)


class ComparisonSchema(Schema):
    a = fields.Nested(RunSchema, required=True)
    b = fields.Nested(RunSchema, required=True)
    sources = fields.List(fields.Nested(SourceComparisonSchema), required=True)
    anomalies = fields.List(fields.Nested(AnomalySchema), required=True,
                            metadata={"description": "What looks wrong in b compared with a."})
    recorded_anomalies = fields.Nested(RecordedAnomaliesSchema, required=True,
                                       metadata={"description": "What the data-quality rules stored for each run "
                                                                "(at most 200 each)."})


class RejectSchema(Schema):
    id = fields.Integer(required=True)
    run_id = fields.Integer(required=True)
    source = fields.String(required=True)
    reason = fields.Raw(required=True, metadata={"description": "Why validation refused it, per field."})
    raw_record_id = fields.Integer(required=True)
    position = fields.String(required=True, metadata={"description": "Where in the source it was read."})
    payload = fields.Raw(required=True, allow_none=True, metadata={
        "description": "The record exactly as received; in a list, null when its JSON is longer than "
                       "API_PAYLOAD_PREVIEW_CHARS (see payload_preview, and /rejects/{id} for the whole)."})
    payload_truncated = fields.Boolean(required=True, metadata={
        "description": "Whether `payload` is left out of this list for its size."})
    payload_preview = fields.String(required=True, allow_none=True, metadata={
        "description": "The first API_PAYLOAD_PREVIEW_CHARS characters of the payload's JSON, when truncated."})
    payload_chars = fields.Integer(required=True, metadata={"description": "Length of the payload's JSON text."})
    payload_hash = fields.String(required=True, metadata={"description": "The raw record's content hash."})
    created_at = fields.DateTime(required=True)
    replayed_at = fields.DateTime(allow_none=True, metadata={"description": "When a replay last retried it."})
    replay_run_id = fields.Integer(allow_none=True, metadata={"description": "The replay run that last retried it."})
    replay_outcome = fields.String(allow_none=True, metadata={"description": "`loaded` or `rejected` (again)."})


class SourceStatsSchema(Schema):
    source = fields.String(required=True)
    rows_total = fields.Integer(required=True, metadata={"description": "Quotes this source has inserted."})
    rejected_total = fields.Integer(required=True)
    last_run_id = fields.Integer(allow_none=True)
    last_run_status = fields.String(allow_none=True)
    last_run = fields.Nested(CountsSchema, allow_none=True, metadata={"description": "Rows in its last run."})
    last_success_at = fields.DateTime(allow_none=True)
    last_failure_at = fields.DateTime(allow_none=True)
    last_error = fields.String(allow_none=True)
    requests_last_run = fields.Integer(allow_none=True)
    retries_last_run = fields.Integer(allow_none=True)
    throttled_last_run = fields.Integer(allow_none=True)
    wait_seconds_last_run = fields.Float(allow_none=True)
    waits_last_run = fields.Integer(allow_none=True)
    longest_wait_seconds_last_run = fields.Float(allow_none=True)
    drift_events_last_run = fields.Integer(required=True, metadata={"description": "Schema drift events in its "
                                                                                   "last run."})
    freshness_seconds = fields.Float(allow_none=True, required=True, metadata={
        "description": "Age of its last success; null if it never succeeded."})
    stale = fields.Boolean(required=True, metadata={"description": "Never succeeded, or its last success is "
                                                    "older than twice the schedule interval."})


class SourceLastRunSchema(Schema):
    run_id = fields.Integer(required=True)
    status = fields.String(required=True)
    counts = fields.Nested(CountsSchema, required=True)
    last_success_at = fields.DateTime(allow_none=True)
    last_failure_at = fields.DateTime(allow_none=True)
    last_error = fields.String(allow_none=True, metadata={"description": "Why its last failed run failed."})


class CheckpointSchema(Schema):
    summary = fields.String(allow_none=True, metadata={"description": "Where the source stands, in words "
                                                       "(e.g. 'x.csv read to line 301, byte 18,234 of 18,234')."})
    run_id = fields.Integer(required=True, metadata={"description": "The run whose load last moved it."})
    batch_id = fields.Integer(required=True)
    updated_at = fields.DateTime(required=True)


class SourceSchema(Schema):
    name = fields.String(required=True)
    kind = fields.String(required=True, metadata={"description": "csv, json, coinpaprika, coingecko, rss..."})
    enabled = fields.Boolean(required=True, metadata={"description": "Whether runs include it (sources.toml "
                                                      "`enabled`, narrowed by ENABLED_SOURCES)."})
    settings = fields.Dict(required=True, metadata={"description": "Its declared settings; secrets are never "
                                                    "shown (a key is named by the variable holding it)."})
    last_run = fields.Nested(SourceLastRunSchema, allow_none=True, required=True)
    checkpoint = fields.Nested(CheckpointSchema, allow_none=True, required=True)
    rows_total = fields.Integer(required=True, metadata={"description": "Rows this source has inserted."})
    rejected_total = fields.Integer(required=True)
    schedule_seconds = fields.Integer(allow_none=True, metadata={"description": "Beat's interval; null when "
                                                                 "disabled."})
    next_run_at = fields.DateTime(allow_none=True, metadata={"description": "When beat will next start it, as "
                                                             "beat last reported; null if disabled or unknown."})


class StatsSchema(Schema):
    sources = fields.List(fields.Nested(SourceStatsSchema), required=True)
    runs_by_status = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    last_run = fields.Nested(RunSchema, allow_none=True, required=True)


class CheckSchema(Schema):
    ok = fields.Boolean(required=True)
    severity = fields.String(required=True, metadata={"description": "'down' if failing stops serving, "
                                                      "'degraded' if it only stops ETL."})
    error = fields.String(allow_none=True)
    latency_ms = fields.Float(required=True)
    details = fields.Dict()


class HealthSchema(Schema):
    status = fields.String(required=True, metadata={"description": "ok, degraded or down."})
    failing = fields.List(fields.String(), required=True, metadata={"description": "Names of failing checks."})
    checks = fields.Dict(keys=fields.String(), values=fields.Nested(CheckSchema), required=True)


class LiveSchema(Schema):
    status = fields.String(required=True)


def envelope(item: type[Schema], name: str, many: bool = False) -> type[Schema]:
    """Return a {"data": item or [item], "meta": ...} schema named `name`."""
    data: Any = fields.List(fields.Nested(item), required=True) if many else fields.Nested(item, required=True)
    meta = fields.Nested(ListMetaSchema if many else MetaSchema, required=True)
    return Schema.from_dict({"data": data, "meta": meta}, name=name)

