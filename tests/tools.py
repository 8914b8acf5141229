"""Skip a test whose outside tool is missing, unless CI said it requires that tool: then fail it, saying why.

.ci/run installs promtool, Chromium with its driver, and docker-compose, and sets REQUIRE_PROMTOOL,
REQUIRE_BROWSER and REQUIRE_COMPOSE; a failed install then fails the tests that need it instead of
skipping them quietly. A developer without the tool sees the skip and its reason (pytest runs with -rs).
"""
from __future__ import annotations

import os

import pytest


def skip_unless_required(requirement: str, reason: str) -> None:
    """Fail with `reason` when the environment variable `requirement` is set; skip with it otherwise."""
    if os.environ.get(requirement):
        pytest.fail(f"{reason} ({requirement} is set: this run must not skip it)")
    pytest.skip(reason)
