"""`make bench` on a newcomer's machine: nothing configured, so it starts its own servers instead of assuming
PostgreSQL on :5432 and Redis on :6379, and its run still checks every count."""
from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kasparro.embedded import free_port
from tests.newcomer import copy_checkout, newcomer_env


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield copy_checkout(tmp_path_factory.mktemp("bench") / "kasparro")


def test_make_bench_starts_its_own_servers_when_none_is_configured(checkout: Path, tmp_path: Path) -> None:
    env = newcomer_env({name: free_port() for name in ("api", "flower", "upstream")})
    small = f"--rows 300 --workers 1 --copies 1 --skip-paging --results {tmp_path}"
    result = subprocess.run(["make", "--no-print-directory", "bench", f"BENCH_ARGS={small}"], cwd=checkout, env=env,
                            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    out = result.stdout + result.stderr

    assert result.returncode == 0, out[-4000:]
    assert "PostgreSQL: started a local server" in out and f"{checkout}/var/bench-servers/pg" in out, out[-4000:]
    assert "Redis: started a local server" in out and f"{checkout}/var/bench-servers/redis" in out, out[-4000:]
    assert "OK: every run succeeded and every count matched" in out
    assert list(tmp_path.glob("result-*.json")), "no result file written"
