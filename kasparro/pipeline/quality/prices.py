"""Rules over the quotes one source run wrote: price_jump (one source, over time) and source_disagreement
(one time bucket, across sources).

Both are one set-based statement each. Their cost is bounded: they start from the run's own quotes (the
BRIN index on market_quotes (run_id): earlier runs' ranges summarized, this run's read whole), at most
`max_rows` of them, newest first: those its last batches wrote (`_FROM_BATCH`), so only those are sorted.
They reach other quotes only through the natural key (asset_id, observed_at, source).
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.orm import Session

from kasparro.models import SourceRun
from kasparro.pipeline.quality.base import Finding, Thresholds

# The newest quotes a run inserted or updated that the price rules look at.
MAX_ROWS = 50_000

# For each asset the run touched, the series starts at the observation just before the run's earliest
# one, so LAG gives every touched quote its predecessor, whichever run wrote it.
_PRICE_JUMP = """
    WITH touched AS (
        SELECT asset_id, min(observed_at) AS first_at
        FROM (SELECT asset_id, observed_at FROM market_quotes
              WHERE run_id = :run_id AND source = :source{from_batch}
              ORDER BY batch_id DESC, id DESC LIMIT :max_rows) AS newest
        GROUP BY asset_id
    ), series AS (
        SELECT q.asset_id, q.observed_at, q.price_usd, q.run_id,
               lag(q.price_usd) OVER w AS previous_price, lag(q.observed_at) OVER w AS previous_at
        FROM touched t
        -- LATERAL (OFFSET 0 keeps it from being flattened into a join): a range scan of the unique
        -- index per asset, never a scan of the whole table.
        CROSS JOIN LATERAL (
            SELECT q.asset_id, q.observed_at, q.price_usd, q.run_id FROM market_quotes q
            WHERE q.source = :source AND q.asset_id = t.asset_id
              AND q.observed_at >= coalesce((SELECT max(p.observed_at) FROM market_quotes p
                                             WHERE p.source = :source AND p.asset_id = t.asset_id
                                               AND p.observed_at < t.first_at), t.first_at)
            OFFSET 0) AS q
        WINDOW w AS (PARTITION BY q.asset_id ORDER BY q.observed_at)
    )
    SELECT s.asset_id, a.slug, s.observed_at, s.price_usd, s.previous_price, s.previous_at,
           abs(s.price_usd - s.previous_price) / s.previous_price AS move
    FROM series s JOIN assets a ON a.id = s.asset_id
    WHERE s.run_id = :run_id AND s.previous_price > 0
      AND abs(s.price_usd - s.previous_price) / s.previous_price > :limit
    ORDER BY move DESC, s.asset_id, s.observed_at LIMIT :max_findings
    """

# One price per source and bucket (its last there), the median of those across sources, and whether this
# source's price stands further than the limit from it. Needs at least two sources in the bucket.
# Each touched bucket is compared inside a LATERAL aggregate (never flattened into a join): one range scan
# of the (asset_id, observed_at) index per bucket, whatever the statistics say. A join of the buckets with
# their medians instead was planned from a one-row estimate right after a first load (no statistics yet) as
# a nested loop that aggregated every bucket again for each bucket: 5,000 quotes hit the 30 s timeout.
_DISAGREEMENT = """
    WITH touched AS (
        SELECT DISTINCT asset_id, date_trunc(:bucket, observed_at) AS bucket
        FROM (SELECT asset_id, observed_at FROM market_quotes
              WHERE run_id = :run_id AND source = :source{from_batch}
              ORDER BY batch_id DESC, id DESC LIMIT :max_rows) AS newest
    ), outliers AS (
        SELECT t.asset_id, t.bucket, m.price_usd, m.median, m.sources,
               abs(m.price_usd - m.median) / m.median AS distance
        FROM touched t
        CROSS JOIN LATERAL (
            SELECT max(l.price_usd) FILTER (WHERE l.source = :source) AS price_usd, count(*) AS sources,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY l.price_usd) AS median
            FROM (SELECT DISTINCT ON (q.source) q.source, q.price_usd FROM market_quotes q
                  WHERE q.asset_id = t.asset_id AND q.observed_at >= t.bucket
                    AND q.observed_at < t.bucket + CAST('1 ' || :bucket AS interval)
                  ORDER BY q.source, q.observed_at DESC) AS l) AS m
        WHERE m.sources >= 2 AND m.median > 0 AND abs(m.price_usd - m.median) / m.median > :limit
        ORDER BY distance DESC, t.asset_id, t.bucket LIMIT :max_findings
    )
    SELECT o.asset_id, a.slug, o.bucket, o.price_usd, o.median, o.sources, o.distance
    FROM outliers o JOIN assets a ON a.id = o.asset_id
    ORDER BY o.distance DESC, o.asset_id, o.bucket
    """

# The first of the source run's last batches that wrote `max_rows` quotes between them (its first batch if they
# all wrote fewer; None without batches). A batch that wrote nothing, or is not loaded, counts as none.
_FROM_BATCH = text(
    """
    SELECT min(id) FROM (
        SELECT id, sum(written) OVER (ORDER BY id DESC) - written AS newer
        FROM (SELECT id, coalesce(written, 0) AS written FROM raw_batches WHERE run_source_id = :run_source_id) AS b
    ) AS counted WHERE newer < :max_rows
    """
)


def _newest_first(session: Session, source_run: SourceRun, statement: str) -> tuple[TextClause, dict[str, Any]]:
    """`statement` reading the run's quotes from its last batches that hold `MAX_ROWS`, and its parameters.

    Quotes without a batch (a run with no batches, as in a test) are read whole, newest id first."""
    from_batch = session.execute(_FROM_BATCH, {"run_source_id": source_run.id, "max_rows": MAX_ROWS}).scalar()
    where = "" if from_batch is None else " AND batch_id >= :from_batch"
    return text(statement.format(from_batch=where)), {
        "run_id": source_run.run_id, "source": source_run.source, "max_rows": MAX_ROWS, "from_batch": from_batch}


def price_jump(session: Session, source_run: SourceRun, limits: Thresholds) -> list[Finding]:
    """Flag quotes of this run whose price moved more than `price_jump` from the asset's previous observation."""
    statement, parameters = _newest_first(session, source_run, _PRICE_JUMP)
    rows = session.execute(statement, {**parameters, "limit": limits.price_jump,
                                       "max_findings": limits.max_findings}).all()
    return [Finding("price_jump", source_run.source, "warning",
                    f"{row.slug} moved {float(row.move):.0%} from {float(row.previous_price):g} at "
                    f"{row.previous_at.isoformat()} to {float(row.price_usd):g} at {row.observed_at.isoformat()}",
                    float(row.price_usd), float(row.previous_price), row.asset_id) for row in rows]


def source_disagreement(session: Session, source_run: SourceRun, limits: Thresholds) -> list[Finding]:
    """Flag this run's prices that stand more than `disagreement` from the cross-source median of their bucket."""
    statement, parameters = _newest_first(session, source_run, _DISAGREEMENT)
    rows = session.execute(statement, {**parameters, "bucket": limits.disagreement_bucket,
                                       "limit": limits.disagreement, "max_findings": limits.max_findings}).all()
    return [Finding("source_disagreement", source_run.source, "warning",
                    f"{row.slug} at {float(row.price_usd):g} is {float(row.distance):.0%} from the median "
                    f"{float(row.median):g} of {row.sources} sources in the {limits.disagreement_bucket} from "
                    f"{row.bucket.isoformat()}", float(row.price_usd), float(row.median), row.asset_id)
            for row in rows]
