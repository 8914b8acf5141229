"""A run with NO_SKIPS set fails when any test skipped, naming it and why; without it a skip is only a skip."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pytest_in(folder: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run pytest on `folder` alone (its own empty ini, so not this suite's conftest) with tests.no_skips loaded."""
    (folder / "pytest.ini").write_text("[pytest]\n")
    environ = {k: v for k, v in os.environ.items() if k != "NO_SKIPS"}
    environ.update(PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.no_skips", "-p", "no:cacheprovider",
                           "-c", str(folder / "pytest.ini"), str(folder)],
                          cwd=folder, env=environ, capture_output=True, text=True, timeout=120)


def write_tests(folder: Path) -> None:
    (folder / "test_sample.py").write_text(
        "import pytest\n\n"
        "def test_runs():\n    assert True\n\n"
        "def test_skips():\n    pytest.skip('no frobnicator here')\n")


def test_with_no_skips_a_skipped_test_fails_the_run_naming_it_and_why(tmp_path: Path) -> None:
    write_tests(tmp_path)

    result = pytest_in(tmp_path, NO_SKIPS="1")

    assert result.returncode == 1, result.stdout
    assert "NO_SKIPS: test_sample.py::test_skips skipped: Skipped: no frobnicator here" in result.stdout


def test_without_no_skips_a_skip_is_only_a_skip(tmp_path: Path) -> None:
    write_tests(tmp_path)

    result = pytest_in(tmp_path)

    assert result.returncode == 0, result.stdout
    assert "1 passed, 1 skipped" in result.stdout and "NO_SKIPS" not in result.stdout
