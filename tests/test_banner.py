"""The first screen of `make run`: plain URLs as configured, and where the API key is, never the key itself."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = "k3y-0f-th1s-test-5b2f9c"


def banner(env_file: Path, **settings: str) -> str:
    """Run the banner as `make serve` does, with `settings` in the shell and `env_file` as .env."""
    env = {k: v for k, v in os.environ.items() if k not in {"API_KEY", "GUNICORN_BIND", "FLOWER_PORT"}}
    env.update(ENV_FILE=str(env_file), **settings)
    result = subprocess.run([sys.executable, "-m", "kasparro.banner"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60, check=True)
    return result.stdout


def test_a_key_in_env_file_is_shown_as_a_command_that_prints_it(tmp_path: Path) -> None:
    env_file = tmp_path / "my dir" / ".env"
    env_file.parent.mkdir()
    env_file.write_text(f"FLOWER_PORT=5999\nAPI_KEY={KEY}\n")

    out = banner(env_file)

    assert KEY not in out
    command = re.search(r'X-API-Key: "(\$\(.*\))"', out).group(1)
    # The command the banner prints is the one a user pastes: it must print the key, even from a path with a space.
    printed = subprocess.run(["sh", "-c", f'printf %s "{command}"'], capture_output=True, text=True, check=True)
    assert printed.stdout == KEY
    assert "Flower http://127.0.0.1:5999" in out


def test_a_key_from_the_environment_is_said_to_be_there_not_in_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("FLOWER_PORT=5999\n")

    out = banner(env_file, API_KEY=KEY)

    assert KEY not in out
    assert "API_KEY set in the environment of this command (not in .env)" in out
    assert "grep" not in out  # .env holds no key: a one-liner reading it would send an empty header


def test_a_key_in_both_says_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("API_KEY=the-file-one\n")

    out = banner(env_file, API_KEY=KEY)

    assert "it wins over the one in .env" in out and KEY not in out and "the-file-one" not in out


def test_no_key_says_writes_are_refused(tmp_path: Path) -> None:
    assert "none set, so POST /run-etl and the other writes are refused" in banner(tmp_path / "missing.env")


def test_the_urls_follow_gunicorn_bind_and_are_plain(tmp_path: Path) -> None:
    out = banner(tmp_path / "missing.env", GUNICORN_BIND="0.0.0.0:8123")

    assert out.splitlines()[0] == ("Status page http://127.0.0.1:8123/  API http://127.0.0.1:8123  "
                                   "docs http://127.0.0.1:8123/docs  Flower http://127.0.0.1:5555")
    # Printed for any terminal to follow: no macOS-only `open`, nothing else to run.
    assert not re.search(r"\bopen\b", out)
