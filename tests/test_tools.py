"""A missing outside tool skips its tests on a developer's machine, and fails them where CI requires it."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

NEEDS_A_TOOL = '''
from tests.tools import skip_unless_required

def test_needs_a_missing_tool():
    skip_unless_required("REQUIRE_SOME_TOOL", "some-tool is not installed")
'''


def _run_with(tmp_path, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_needs_tool.py").write_text(NEEDS_A_TOOL)
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=60, check=False)


def test_a_missing_tool_skips_and_says_why(tmp_path) -> None:
    result = _run_with(tmp_path)
    assert result.returncode == 0 and "1 skipped" in result.stdout
    assert "some-tool is not installed" in result.stdout


def test_a_missing_tool_that_ci_requires_fails_the_run(tmp_path) -> None:
    result = _run_with(tmp_path, REQUIRE_SOME_TOOL="1")
    assert result.returncode == 1 and "1 failed" in result.stdout
    assert "REQUIRE_SOME_TOOL is set: this run must not skip it" in result.stdout


@pytest.mark.parametrize("requirement", ["REQUIRE_PROMTOOL", "REQUIRE_BROWSER", "REQUIRE_COMPOSE"])
def test_ci_requires_every_tool_it_installs(requirement: str) -> None:
    assert f"export {requirement}=1" in (ROOT / ".ci" / "run").read_text()
