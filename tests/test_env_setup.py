"""`make run` / `make up` create .env from .env.example and generate the secrets that have no default."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ensure_env(workdir: Path) -> subprocess.CompletedProcess[str]:
    scripts = workdir / "scripts"
    scripts.mkdir(exist_ok=True)
    shutil.copy(ROOT / "scripts" / "ensure-env.sh", scripts / "ensure-env.sh")
    return subprocess.run(["sh", "scripts/ensure-env.sh", ".env"], cwd=workdir, capture_output=True, text=True,
                          check=True)


def values(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and line[0] != "#")


def test_a_fresh_checkout_gets_an_env_with_generated_secrets_printed_once(tmp_path: Path) -> None:
    shutil.copy(ROOT / ".env.example", tmp_path / ".env.example")

    first = ensure_env(tmp_path)

    env = values(tmp_path / ".env")
    assert len(env["API_KEY"]) >= 32 and env["FLOWER_BASIC_AUTH"].startswith("admin:")
    assert env["API_KEY"] in first.stdout
    assert (tmp_path / ".env").stat().st_mode & 0o077 == 0  # secrets readable by the owner only
    second = ensure_env(tmp_path)
    assert values(tmp_path / ".env") == env
    assert "generated" not in second.stdout


def test_a_key_already_set_is_never_replaced(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("API_KEY=chosen-by-the-operator\n")

    ensure_env(tmp_path)

    assert values(tmp_path / ".env")["API_KEY"] == "chosen-by-the-operator"


def test_no_secret_has_a_value_in_the_committed_example() -> None:
    example = values(ROOT / ".env.example")

    assert example["API_KEY"] == "" and example["FLOWER_BASIC_AUTH"] == ""
