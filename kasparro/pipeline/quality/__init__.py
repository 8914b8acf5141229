"""Data-quality rules, run once when a source's part of a run closes, each finding stored with its rule.

| rule | looks at | fires when (defaults) |
|---|---|---|
| volume | rows read by this source run vs its last 5 successful runs | below median/4 or above median*4, with >= 3 runs |
| slow_run | this source run's duration vs the same history | over 3x the median, and at least 60 s |
| price_jump | quotes this run wrote vs each asset's previous observation from the source | price moved > 50% |
| source_disagreement | quotes this run wrote vs other sources in the same day (or hour) | > 10% from the cross-source median |
| asset_disappeared / asset_reappeared | a full listing (CoinPaprika, CoinGecko) vs the source's aliases | an asset left / came back |

A rule that fails (a bug, a timeout) records no finding; it never fails the load, and the other rules
still run: each works inside its own savepoint, under a statement timeout. The failure is a warning in the
log and a `quality` event in the run's events (`/runs/<id>`), so a check that did not happen is seen.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import insert, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from kasparro.models import REPAIR_TRIGGERS, SUCCEEDED, Anomaly, SourceRun
from kasparro.pipeline import events
from kasparro.pipeline.outage import database_unreachable
from kasparro.pipeline.quality import history, listing, prices
from kasparro.pipeline.quality.base import Finding, Thresholds

__all__ = ["Finding", "Thresholds", "check_source_run", "evaluate"]

logger = logging.getLogger(__name__)

Rule = Callable[[Session, SourceRun, Thresholds], list[Finding]]

_DURATION = text("SELECT extract(epoch FROM finished_at - started_at) FROM run_sources WHERE id = :id")


def _history_rules(session: Session, source_run: SourceRun, limits: Thresholds) -> list[Finding]:
    if source_run.run.trigger in REPAIR_TRIGGERS:
        return []  # a repair's volume and duration say nothing about the source's health
    past = history.recent_runs(session, source_run, limits.history_runs)
    seconds = session.execute(_DURATION, {"id": source_run.id}).scalar()
    found = [history.volume(source_run.source, source_run.extracted or 0, past.rows, limits),
             history.slow_run(source_run.source, None if seconds is None else float(seconds), past.seconds, limits)]
    return [finding for finding in found if finding is not None]


def _listing_rule(session: Session, source_run: SourceRun, limits: Thresholds) -> list[Finding]:
    kind = (source_run.run.config.get(source_run.source) or {}).get("kind")
    return listing.asset_listing(session, source_run, kind, limits)


def _wrote_quotes(rule: Rule) -> Rule:
    """A rule over the quotes a run wrote: nothing to look at, and no statement, when it wrote none."""
    def checked(session: Session, source_run: SourceRun, limits: Thresholds) -> list[Finding]:
        return rule(session, source_run, limits) if _written(source_run) else []
    checked.__name__ = getattr(rule, "__name__", "rule")
    return checked


def _written(source_run: SourceRun) -> int:
    return (source_run.inserted or 0) + (source_run.updated or 0)


RULES: tuple[Rule, ...] = (_history_rules, _wrote_quotes(prices.price_jump), _wrote_quotes(prices.source_disagreement),
                           _listing_rule)


def evaluate(session: Session, source_run: SourceRun, limits: Thresholds) -> list[Finding]:
    """Run every rule on a closed source run and store what they find; a failing rule is logged and skipped.

    The caller commits. Runs under a statement timeout of `limits.timeout_seconds`, restored afterwards.
    """
    previous = session.execute(text("SELECT current_setting('statement_timeout'), current_setting('jit')")).one()
    # Plans over a table that just grew by a large load are only good with its statistics up to date,
    # and compiling them (JIT) costs more than these statements on a bounded number of rows take.
    session.execute(text("SELECT set_config('statement_timeout', :v, true), set_config('jit', 'off', true)"),
                    {"v": f"{int(limits.timeout_seconds * 1000)}ms"})
    # The BRIN ranges of earlier runs were summarized once each committed (stages.load), so the rules read
    # this run's own unsummarized ranges whole, and no others.
    _analyze_if_grown(session, source_run)
    found: list[Finding] = []
    for rule in RULES:
        started = time.monotonic()
        try:
            with session.begin_nested():
                findings = rule(session, source_run, limits)
                _store(session, source_run, findings)
            found += findings
        except Exception as exc:  # noqa: BLE001 - a quality rule must never fail the load
            _unless_outage(exc)
            name = getattr(rule, "__name__", str(rule)).lstrip("_")  # _history_rules: volume and slow_run
            _rule_failed(session, source_run, name, exc, time.monotonic() - started)
    session.execute(text("SELECT set_config('statement_timeout', :v, true), set_config('jit', :jit, true)"),
                    {"v": previous[0], "jit": previous[1]})
    return found


def _unless_outage(exc: Exception) -> None:
    """Raise `exc` again if it is a database outage: the transaction is gone with the connection, and the
    stage is resumed (tasks), where carrying on would fail it on the dead transaction instead."""
    if database_unreachable(exc):
        raise exc


def _rule_failed(session: Session, source_run: SourceRun, name: str, exc: Exception, seconds: float) -> None:
    """Log a rule that failed and add a `quality` run event: the load stands, but the check did not happen."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    logger.warning("quality rule %s failed on source run %s after %.1fs, no finding recorded: %s", name,
                   source_run.id, seconds, reason, exc_info=True)
    try:
        with session.begin_nested():  # flushed here: an event that cannot be written must not fail the commit
            events.record(session, source_run, "quality", f"quality rule {name} failed after {seconds:.1f}s "
                          f"and checked nothing: {reason}")
    except Exception as exc:  # noqa: BLE001 - the warning above already says it
        _unless_outage(exc)
        logger.warning("could not record the failure of quality rule %s", name, exc_info=True)


# A partitioned parent's reltuples stays -1 (it stores no rows); its partitions' estimates add up to the table's.
_ESTIMATED_ROWS = text("SELECT sum(greatest(c.reltuples, 0)) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                       " WHERE i.inhparent = 'market_quotes'::regclass")


# Autovacuum analyzes a table once a tenth of it changed, but maybe only after this run's rules ran.
_ANALYZE_SHARE = 0.1
_ANALYZE_MIN_ROWS = 10_000


def _analyze_if_grown(session: Session, source_run: SourceRun) -> bool:
    """ANALYZE market_quotes if this run wrote a tenth of it or more since its statistics were taken; whether so.

    Only the columns the rules' plans turn on: sampling reads the table anyway, but each column's
    statistics cost their own sort. Autovacuum brings the others up to date later, in each partition; it
    never analyzes the partitioned parent, whose whole-table statistics only an ANALYZE like this one takes
    (it samples every partition, and analyzes each of them too).
    """
    written = _written(source_run)
    if written < _ANALYZE_MIN_ROWS:
        return False
    estimated = session.execute(_ESTIMATED_ROWS).scalar()
    if estimated is not None and written < _ANALYZE_SHARE * max(float(estimated), 0.0):
        return False
    try:
        with session.begin_nested():
            session.execute(text("ANALYZE market_quotes (run_id, source, asset_id, observed_at)"))
        return True
    except Exception as exc:  # noqa: BLE001 - e.g. the statement timeout; the rules run with older statistics
        _unless_outage(exc)
        logger.warning("could not analyze market_quotes before the quality rules", exc_info=True)
        return False


def check_source_run(session: Session, source_run: SourceRun, limits: Thresholds) -> list[Finding]:
    """Evaluate the rules on a source run that just closed successfully; raises only on a database outage."""
    if source_run.status not in SUCCEEDED:
        return []
    try:
        return evaluate(session, source_run, limits)
    except Exception as exc:  # noqa: BLE001 - e.g. the timeout could not be set; the load stands regardless
        _unless_outage(exc)
        logger.warning("quality rules skipped on source run %s", source_run.id, exc_info=True)
        return []


def _store(session: Session, source_run: SourceRun, findings: list[Finding]) -> None:
    if findings:
        session.execute(insert(Anomaly), [
            {"run_id": source_run.run_id, "run_source_id": source_run.id, "source": f.source, "rule": f.rule,
             "asset_id": f.asset_id, "severity": f.severity, "observed": f.observed, "expected": f.expected,
             "detail": f.detail[:2000]} for f in findings])
