"""With NO_SKIPS set (`.ci/run` sets it), a run that skipped any test fails, naming each skip and its reason.

`skip_unless_required` (tests/tools.py) turns the known skips into failures one by one; this catches the rest:
a skip added later, a plugin's skip, a fixture's. A developer without NO_SKIPS still sees skips as skips.
"""
from __future__ import annotations

import os

import pytest

SKIPPED_EXIT = pytest.ExitCode.TESTS_FAILED


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not os.environ.get("NO_SKIPS"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if not skipped:
        return
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reporter.write_line(f"NO_SKIPS: {report.nodeid} skipped: {reason}", red=True)
    reporter.write_line(f"NO_SKIPS is set and {len(skipped)} test(s) skipped: the run fails", red=True)
    session.exitstatus = SKIPPED_EXIT
