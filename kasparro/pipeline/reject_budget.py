"""Stop a source whose records are mostly rejected: a misconfiguration, not bad records.

A wrong `date_format` rejects every row of a file; read to the end, a 2M-row file would write 2M rejects
nobody will read one by one. So a source may reject at most `max_reject_ratio` of the records it has
transformed in a run (default 0.5), counted once at least `reject_sample` records (default 1,000) were
seen. The batch that goes past it is kept, rejects and all (what /rejects shows, what a replay takes);
then the source fails with the count, the field most rejects name, the first of their reasons, and what
to check. The rest of the file is neither transformed nor rejected: a run after the fix reads it, as
its chunks were received by a failed run only (see chunks). The anchors are BigQuery's
`maxBadRecords` and Snowflake's `ON_ERROR = SKIP_FILE_<n>%`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from kasparro.errors import RejectBudgetExceeded, SourceConfigError
from kasparro.models import SourceRun

DEFAULT_RATIO = 0.5
DEFAULT_SAMPLE = 1_000
# What to look at first, by the field most rejects name.
_HINTS = {"observed_at": "check date_format (or time_unit) and the column mapped to observed_at",
          "_schema": "check the source's column or field mapping"}
_HINT = "check the column or field mapped to {field}"


@dataclass(frozen=True)
class Budget:
    """How much of a run a source may reject (`max_reject_ratio`), counted after `reject_sample` records."""

    ratio: float = DEFAULT_RATIO
    sample: int = DEFAULT_SAMPLE


def budget_of(spec: Mapping[str, Any], name: str | None = None) -> Budget:
    """Read a source's reject budget, refusing values that cannot work."""
    ratio = spec.get("max_reject_ratio", DEFAULT_RATIO)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
        raise SourceConfigError(f"max_reject_ratio must be a number from 0 to 1 (1: no budget), not {ratio!r}",
                                source=name)
    sample = spec.get("reject_sample", DEFAULT_SAMPLE)
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
        raise SourceConfigError(f"reject_sample must be a whole number from 1, not {sample!r}", source=name)
    return Budget(float(ratio), sample)


# Records this source run has transformed so far (this transaction's batch included) and of them rejected.
_SEEN = text(
    """
    SELECT coalesce(sum(b.new_records), 0), s.rejected FROM run_sources s
    LEFT JOIN raw_batches b ON b.run_source_id = s.id AND b.state IN ('transformed', 'loaded')
    WHERE s.id = :id GROUP BY s.rejected
    """
)
# The field each reject names first, most named first, with one message for it: the first record's (a file's
# first rejected line), the one a person would look at first. A record the source could not map fails as a
# whole (`_schema`), its message led by the field ("observed_at: '31/12/2020' does not match '%Y-%m-%d'"):
# that field is the one named.
_WHY = text(
    r"""
    SELECT CASE WHEN led THEN substring(message FROM '^([A-Za-z0-9_.]+): ') ELSE key END AS field, count(*),
           (array_agg(CASE WHEN led THEN regexp_replace(message, '^[A-Za-z0-9_.]+: ', '') ELSE message END
                      ORDER BY rid))[1]
    FROM (
        SELECT key, message, rid, key = '_schema' AND message ~ '^[A-Za-z0-9_.]+: ' AS led FROM (
            SELECT first.key, coalesce(r.reason -> first.key ->> 0, r.reason ->> first.key) AS message,
                   r.raw_record_id AS rid
            FROM rejected_records r,
                 LATERAL (SELECT k AS key FROM jsonb_object_keys(r.reason) AS k ORDER BY k LIMIT 1) AS first
            WHERE r.run_id = :run AND r.source = :source
        ) AS firsts
    ) AS named
    GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1
    """
)


def check(session: Session, source_run: SourceRun, budget: Budget) -> None:
    """Raise RejectBudgetExceeded if the source run, its current batch included, is past its budget."""
    if budget.ratio >= 1 or source_run.run.trigger == "replay":  # a replay takes rejects only
        return
    seen, rejected = session.execute(_SEEN, {"id": source_run.id}).one()
    if seen < budget.sample or rejected <= budget.ratio * seen:
        return
    field, named, example = session.execute(_WHY, {"run": source_run.run_id, "source": source_run.source}).one()
    reason = example if len(example or "") <= 200 else example[:197] + "..."
    raise RejectBudgetExceeded(
        f"{rejected:,} of the first {seen:,} records rejected, past max_reject_ratio {budget.ratio:g}; "
        f"{100 * named / rejected:.0f} % for {field}: {reason}; "
        f"{_HINTS.get(field, _HINT.format(field=field))}. Nothing more of this run is transformed; "
        f"fix the setting and run the source again", source=source_run.source)
