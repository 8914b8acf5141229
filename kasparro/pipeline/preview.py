"""Check a source's configuration before its first run: read its first page, then map, validate and resolve it.

It is a dry run of extract and transform for a few records (`flask etl sources --check`):

    read       the first page only, and never a second request: every HTTP kind's client draws on
               a budget that refuses one (`OneRequest`), and retries are off (`max_retries = 0`)
    map        `to_unified`, and the fields of `expected_schema` (or named by its KeyError) not there
    drift      `drift.compare` against the source's last snapshot, as transform checks a batch (`evolve` renames
               are mapped back before validation; nothing is recorded)
    validate   `records.validate_batch`, the transform's own code, on each payload as the raw layer keeps it
    resolve    `identity.preview`: the decisions `identity.resolve` makes, reading aliases and assets only

It never writes: the caller runs it in a read-only transaction (`read_only`) that is rolled back.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from kasparro.errors import KasparroError
from kasparro.pipeline import drift, drift_log, identity, reject_budget, targets
from kasparro.pipeline.extract import stored_json
from kasparro.pipeline.records import validate_batch
from kasparro.sources import SourceContext, build_source, ids_kind
from kasparro.sources.base import UNREADABLE, Expected, RawItem, RequestStats, Source

# The most records a check shows: enough to see a mapping work, few enough to read on one screen.
MAX_RECORDS = 100


class SecondRequest(Exception):
    """A source asked for a second request during a check, which makes one at most."""


class OneRequest:
    """A request budget (see `kasparro.sources.ratelimit.Budget`) granting one request in all, to every source."""

    def __init__(self) -> None:
        self.granted = 0

    def for_source(self, *_: Any, **__: Any) -> OneRequest:
        """Return this same budget, whatever source or rate it is asked for."""
        return self

    def acquire(self) -> float:
        """Grant the first request at once; refuse any other (SecondRequest)."""
        if self.granted:
            raise SecondRequest("a check makes one request at most")
        self.granted += 1
        return 0.0

    def pause(self, seconds: float) -> None:
        """Ignore a provider's Retry-After: a check never retries."""


@dataclass(frozen=True)
class RecordCheck:
    """What became of one record: the fields it holds (dotted where the schema expects nesting), its unified
    fields (None if unmappable), the fields missing, the asset it resolves to (valid quotes only, as in the
    pipeline), and the reasons it is rejected (None if valid)."""

    position: str
    received: list[str]
    unified: dict[str, Any] | None
    missing: list[str]
    asset: identity.Decision | None
    reasons: dict[str, Any] | None


@dataclass(frozen=True)
class Check:
    """A source's check: what it is, how many requests it made, its first records, and how their shape drifted."""

    source: str
    kind: str
    target: str
    requests: int
    records: list[RecordCheck]
    drifts: list[drift.Drift]
    drift_policy: str


@contextmanager
def read_only(session: Session) -> Iterator[Session]:
    """Hold the session in a read-only transaction for the block, and roll it back after."""
    session.rollback()
    # PostgreSQL refuses any write in it: the check cannot touch assets, raw tables or checkpoints by mistake.
    session.execute(text("SET TRANSACTION READ ONLY"))
    try:
        yield session
    finally:
        session.rollback()


def check_source(session: Session, name: str, spec: Mapping[str, Any], secrets: Mapping[str, str],
                 base_dir: Path, overrides: Mapping[tuple[str, str], str], records: int) -> Check:
    """Read up to `records` records of the source's first page, and map, validate and resolve each."""
    stats = RequestStats()
    reject_budget.budget_of(spec, name)  # a budget that cannot work fails the check as it would fail the run
    context = SourceContext(secrets=secrets, base_dir=base_dir, stats=stats, budget=OneRequest())
    # The error of the one request is what the operator needs to see, not the retries' last one.
    source = build_source(name, {**spec, "max_retries": 0}, context)
    items = first_items(source, records)
    # As the transform reads each record back from the raw layer: an unreadable row carries its reason.
    payloads = [json.loads(stored_json(item)[1]) for item in items]
    shape = _shape(session, name, spec, source, payloads)
    checked = [_check_record(source, item.position, payload, shape.renames)
               for item, payload in zip(items, payloads)]
    target = targets.of_source(source).name
    if target == "quotes":
        decided = _identities(session, name, ids_kind(spec), identity.source_overrides(overrides, source),
                              [quote for _, quote in checked])
        checked = [(replace(r, asset=decided[quote["source_asset_id"]]) if quote else r, quote)
                   for r, quote in checked]
    return Check(name, str(spec["kind"]), target, stats.requests, [r for r, _ in checked], shape.found,
                 shape.policy.mode)


def _shape(session: Session, name: str, spec: Mapping[str, Any], source: Source,
           payloads: list[dict[str, Any]]) -> drift_log.Check:
    """Compare the records' shape with the expected schema and the source's last snapshot, as transform does."""
    policy = drift.policy_of(spec, name)
    expected = source.expected_schema()
    flat = [drift.flatten(payload, expected) for payload in payloads if UNREADABLE not in payload]
    # No batch of the check's own: any snapshot the source has is the previous one.
    previous = drift_log.previous_snapshot(session, name, batch_id=-1)
    snapshot = drift.observe(flat)
    return drift_log.Check(policy, drift.compare(expected, previous, snapshot, policy.threshold), snapshot)


def first_items(source: Source, records: int) -> list[RawItem]:
    """Return the first `records` records of the source's first page; what it holds beyond is never read."""
    pages = source.pages(None, records)
    try:
        page = next(pages, None)
    except SecondRequest:
        # A source that holds a page back until it has fetched the next (CoinGecko when a request returns
        # no more than `records` coins) gives nothing within one request.
        raise KasparroError("its first page needs a second request; check it with --records below the "
                            "records one request returns", source=source.name) from None
    finally:
        pages.close()
    return [] if page is None else page.items[:records]


def _check_record(source: Source, position: str, payload: dict[str, Any],
                  renames: Mapping[str, str]) -> tuple[RecordCheck, dict[str, Any] | None]:
    """Check one record; return it with its validated fields (None for a reject)."""
    unified, unmapped = _mapped(source, payload)
    outcome = validate_batch(source, [(0, payload)], renames)
    expected = source.expected_schema()
    received = list(drift.flatten(payload, expected))
    missing = [] if UNREADABLE in payload else _missing(expected, received, unmapped)
    reasons = outcome.rejects[0][1] if outcome.rejects else None
    quote = outcome.quotes[0][1] if outcome.quotes else None
    return RecordCheck(position, received, unified, missing, None, reasons), quote


def _mapped(source: Source, payload: Mapping[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    """Return the unified fields (None if the mapping fails) and the fields a KeyError named."""
    try:
        return source.to_unified(payload), []
    except KeyError as exc:
        return None, [part.strip() for part in str(exc.args[0] if exc.args else "").split(",") if part.strip()]
    except (ValueError, TypeError, AttributeError):
        return None, []


def _missing(expected: Mapping[str, Expected], received: list[str], unmapped: list[str]) -> list[str]:
    """Name the expected fields a record lacks, then any other field its mapping asked for in vain."""
    absent = [field if spec.required else f"{field} (optional)" for field, spec in expected.items()
              if field not in received]
    return absent + [field for field in unmapped if field not in expected]


def _identities(session: Session, name: str, kind: str, overrides: Mapping[tuple[str, str], str],
                quotes: list[dict[str, Any] | None]) -> dict[str, identity.Decision]:
    """Say which asset each valid quote would resolve to (the pipeline never resolves a reject)."""
    refs = {q["source_asset_id"]: identity.coin_ref(q) for q in quotes if q is not None}
    return identity.preview(session, name, kind, refs, overrides) if refs else {}
