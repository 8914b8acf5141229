"""asset_disappeared / asset_reappeared: follow which assets a source's full listing holds.

Only API sources whose extract reads the whole listing every run (LISTING_KINDS) take part; a CSV run
reads only what was appended, so an asset it did not mention has not gone anywhere. The listing is
the final cursor of the run's extract (`{"seen": {source_asset_id: last_updated}}`, kept to the
assets listed in that extract, see kasparro.sources.watermark); a run that extracted nothing wrote no
cursor and changes nothing. A missing asset's alias is marked inactive, never deleted, and active again
when the asset comes back.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from kasparro.models import SourceRun
from kasparro.pipeline.quality.base import Finding, Thresholds

LISTING_KINDS = ("coinpaprika", "coingecko")

_FINAL_CURSOR = text("SELECT cursor_after FROM raw_batches WHERE run_source_id = :rs ORDER BY seq DESC LIMIT 1")

# RETURNING the old inactive_since needs the row as it was: hence the self-join.
_MARK = text(
    """
    UPDATE asset_aliases AS a
    SET active = :listed, inactive_since = CASE WHEN :listed THEN NULL ELSE now() END
    FROM asset_aliases AS old JOIN assets s ON s.id = old.asset_id
    WHERE a.id = old.id AND a.source = :source AND a.active <> :listed
      AND (a.source_asset_id = ANY(:ids)) = :listed
    RETURNING a.asset_id, a.source_asset_id, s.slug, old.inactive_since AS missing_since
    """
)


def listed_ids(session: Session, source_run: SourceRun, kind: str | None) -> list[str] | None:
    """Return the source ids the run's full listing held, or None if this run did not read a full listing."""
    if kind not in LISTING_KINDS:
        return None
    cursor: Any = session.execute(_FINAL_CURSOR, {"rs": source_run.id}).scalar()
    seen = cursor.get("seen") if isinstance(cursor, dict) else None
    return sorted(seen) if isinstance(seen, dict) and seen else None


def asset_listing(session: Session, source_run: SourceRun, kind: str | None, limits: Thresholds) -> list[Finding]:
    """Mark aliases missing from the listing inactive and listed ones active again; a finding per change."""
    ids = listed_ids(session, source_run, kind)
    if ids is None:
        return []
    params = {"source": source_run.source, "ids": ids}
    gone = session.execute(_MARK, {**params, "listed": False}).all()
    back = session.execute(_MARK, {**params, "listed": True}).all()
    findings = [Finding("asset_disappeared", source_run.source, "warning",
                        f"{row.slug} ({row.source_asset_id}) is missing from the listing of {len(ids)} assets",
                        asset_id=row.asset_id) for row in gone[:limits.max_findings]]
    findings += [Finding("asset_reappeared", source_run.source, "info",
                         f"{row.slug} ({row.source_asset_id}) is listed again, missing since "
                         f"{row.missing_since.isoformat() if row.missing_since else 'unknown'}",
                         asset_id=row.asset_id) for row in back[:limits.max_findings]]
    return findings
