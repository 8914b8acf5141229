"""`make run` / `make up` create .env from .env.example and generate the secrets that have no default."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
SECRETS = ("API_KEY", "FLOWER_BASIC_AUTH", "POSTGRES_PASSWORD", "APP_DB_PASSWORD", "GRAFANA_ADMIN_PASSWORD",
           "FAKE_UPSTREAM_ADMIN_TOKEN")


def ensure_env(workdir: Path) -> subprocess.CompletedProcess[str]:
    scripts = workdir / "scripts"
    scripts.mkdir(exist_ok=True)
    shutil.copy(ROOT / "scripts" / "ensure-env.sh", scripts / "ensure-env.sh")
    return subprocess.run(["sh", "scripts/ensure-env.sh", ".env"], cwd=workdir, capture_output=True, text=True,
                          check=True)


def values(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and line[0] != "#")


def test_a_fresh_checkout_gets_an_env_with_generated_secrets_never_printed(tmp_path: Path) -> None:
    shutil.copy(ROOT / ".env.example", tmp_path / ".env.example")

    first = ensure_env(tmp_path)

    env = values(tmp_path / ".env")
    assert len(env["API_KEY"]) >= 32 and env["FLOWER_BASIC_AUTH"].startswith("admin:")
    # Terminals are logged and shared: the output says where the secrets are, never what they are.
    for name in SECRETS:
        assert env[name] and env[name].split(":")[-1] not in first.stdout, f"{name} was printed"
        assert name in first.stdout
    # ... and how to read the API key, which a newcomer needs first.
    (command,) = [line.split(": ", 1)[1] for line in first.stdout.splitlines() if line.startswith("your API key")]
    shown = subprocess.run(["sh", "-c", command], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert shown.strip() == f"API_KEY={env['API_KEY']}"
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

    assert example["API_KEY"] == "" and example["FLOWER_BASIC_AUTH"] == "" and example["POSTGRES_PASSWORD"] == ""
    assert example["GRAFANA_ADMIN_PASSWORD"] == "" and example["APP_DB_PASSWORD"] == ""



def without_secrets(**extra: str) -> dict[str, str]:
    """Return this process's environment minus our secrets, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in SECRETS and k != "ENV_FILE"}
    return {**env, **extra}


def test_a_secret_set_in_the_environment_is_neither_generated_nor_printed(tmp_path: Path) -> None:
    shutil.copy(ROOT / ".env.example", tmp_path / ".env.example")
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    shutil.copy(ROOT / "scripts" / "ensure-env.sh", scripts / "ensure-env.sh")

    result = subprocess.run(["sh", "scripts/ensure-env.sh", ".env"], cwd=tmp_path, capture_output=True, text=True,
                            check=True, env=without_secrets(API_KEY="chosen-in-the-shell", POSTGRES_PASSWORD="pw"))

    env = values(tmp_path / ".env")
    assert env.get("API_KEY", "") == "" and env.get("POSTGRES_PASSWORD", "") == ""
    assert "API_KEY" not in result.stdout and "POSTGRES_PASSWORD" not in result.stdout
    assert "chosen-in-the-shell" not in result.stdout
    assert env["FLOWER_BASIC_AUTH"].startswith("admin:")  # the one the shell left unset is still generated


def test_make_up_generates_the_database_passwords_too(tmp_path: Path) -> None:
    shutil.copy(ROOT / ".env.example", tmp_path / ".env.example")

    ensure_env(tmp_path)

    env = values(tmp_path / ".env")
    assert len(env["POSTGRES_PASSWORD"]) >= 24 and len(env["APP_DB_PASSWORD"]) >= 24
    assert env["POSTGRES_PASSWORD"] != env["APP_DB_PASSWORD"]


def test_make_up_generates_the_grafana_admin_password(tmp_path: Path) -> None:
    shutil.copy(ROOT / ".env.example", tmp_path / ".env.example")

    ensure_env(tmp_path)
    first = values(tmp_path / ".env")["GRAFANA_ADMIN_PASSWORD"]
    ensure_env(tmp_path)

    assert len(first) >= 24 and values(tmp_path / ".env")["GRAFANA_ADMIN_PASSWORD"] == first


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _copy_of_the_checkout(tmp_path: Path) -> Path:
    """Lay out what `make run` needs in a fresh directory, so its `.env` is a throwaway one."""
    tree = tmp_path / "checkout"
    tree.mkdir()
    for name in ("Makefile", "Procfile", "wsgi.py", "gunicorn.conf.py", "celeryconfig.py", "sources.toml"):
        shutil.copy(ROOT / name, tree / name)
    shutil.copytree(ROOT / "kasparro", tree / "kasparro", ignore=shutil.ignore_patterns("__pycache__"))
    for name in (".venv", "data", "migrations"):
        (tree / name).symlink_to(ROOT / name)
    return tree


def _honcho_command_of_make_run(tree: Path) -> str:
    """Return the line `make run` starts the Procfile with (its `serve` step, prerequisites taken as done)."""
    dry = subprocess.run(["make", "-n", "serve", "-o", "init-db"], cwd=tree, capture_output=True, text=True,
                         check=True)
    (line,) = [line for line in dry.stdout.splitlines() if "kasparro.procfile" in line and not line.startswith("#")]
    return line


def _wait_for(url: str, process: subprocess.Popen[bytes], auth: tuple[str, str] | None = None) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "honcho exited early"
        try:
            requests.get(url, timeout=5, auth=auth)
            return
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer")


@pytest.mark.usefixtures("app")
def test_make_run_takes_the_api_key_and_flower_login_from_the_environment_over_env_file(tmp_path: Path) -> None:
    from tests.conftest import BROKER_URL, DATABASE_URL, QUEUE, RATE_LIMIT_PREFIX

    tree = _copy_of_the_checkout(tmp_path)
    api_port, flower_port = _free_port(), _free_port()
    # Everything but the two secrets comes from .env: that path must keep working too.
    (tree / ".env").write_text(
        f"API_KEY=key-in-dotenv\nFLOWER_BASIC_AUTH=admin:dotenv\nGUNICORN_BIND=127.0.0.1:{api_port}\n"
        f"WEB_CONCURRENCY=1\nFLOWER_PORT={flower_port}\nDATABASE_URL={DATABASE_URL}\nBROKER_URL={BROKER_URL}\n"
        f"RESULT_BACKEND={BROKER_URL}\nREDIS_URL={BROKER_URL}\nTASK_QUEUE={QUEUE}-make-run\n"
        f"RATE_LIMIT_PREFIX={RATE_LIMIT_PREFIX}\nENABLED_SOURCES=csv_daily_2019\nOFFLINE=1\n")
    command = _honcho_command_of_make_run(tree) + " api flower"
    process = subprocess.Popen(["bash", "-c", command], cwd=tree, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=without_secrets(API_KEY="secret", FLOWER_BASIC_AUTH="admin:from-shell"))
    try:
        api = f"http://127.0.0.1:{api_port}"
        _wait_for(f"{api}/health/live", process)
        assert requests.post(f"{api}/run-etl", headers={"X-API-Key": "secret"}, timeout=30).status_code != 401
        assert requests.post(f"{api}/run-etl", headers={"X-API-Key": "key-in-dotenv"}, timeout=30).status_code == 401
        flower = f"http://127.0.0.1:{flower_port}/"
        _wait_for(f"{flower}healthcheck", process)  # open to all, unlike the dashboard
        assert requests.get(flower, auth=("admin", "from-shell"), timeout=10).status_code == 200
        assert requests.get(flower, auth=("admin", "dotenv"), timeout=10).status_code == 401
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
