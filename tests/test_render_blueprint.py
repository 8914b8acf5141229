"""render.yaml: every start command names things that exist, every variable is one the app reads, no secret in it."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kasparro.cli import etl
from kasparro.config import load_config

ROOT = Path(__file__).resolve().parent.parent
SECRET_NAME = re.compile(r"(^API_KEY|_API_KEY|SECRET|PASSWORD|TOKEN|BASIC_AUTH)$")
# Read by other programs than kasparro.config: Flower's login, Render's Python.
OTHER_READERS = {"FLOWER_BASIC_AUTH", "PYTHON_VERSION"}


class Recorder(dict[str, str]):
    """An empty environment that remembers every name asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        self.asked.add(name)
        return super().get(name, default)


def names_the_app_reads() -> set[str]:
    """Return every variable kasparro.config and gunicorn.conf.py read."""
    env = Recorder()
    load_config(env)
    gunicorn = set(re.findall(r"os\.environ(?:\.get\(|\[)\"(\w+)\"", (ROOT / "gunicorn.conf.py").read_text()))
    return env.asked | gunicorn


@pytest.fixture(scope="module")
def blueprint() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "render.yaml").read_text())


def services(blueprint: dict[str, Any], kind: str | None = None) -> list[dict[str, Any]]:
    return [s for s in blueprint["services"] if kind is None or s["type"] == kind]


def app_services(blueprint: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in blueprint["services"] if s["type"] in {"web", "worker"}]


def variables(service: dict[str, Any], blueprint: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return the service's variables by name, its groups' included."""
    groups = {g["name"]: g for g in blueprint.get("envVarGroups", [])}
    found: dict[str, dict[str, Any]] = {}
    for entry in service.get("envVars", []):
        if "fromGroup" in entry:
            found.update({v["key"]: v for v in groups[entry["fromGroup"]]["envVars"]})
        else:
            found[entry["key"]] = entry
    return found


def command_refers_to_existing_things(command: str) -> None:
    argv = shlex.split(command)
    for flag in ("-c", "-r"):
        if flag in argv:
            assert (ROOT / argv[argv.index(flag) + 1]).is_file(), command
    if "-A" in argv:
        module = argv[argv.index("-A") + 1]
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), command
    for arg in argv:
        if re.fullmatch(r"\w+:\w+", arg):
            module, name = arg.split(":")
            assert re.search(rf"^\s*{name} = ", (ROOT / f"{module}.py").read_text(), re.M), command
    if "--app" in argv:
        assert (ROOT / f"{argv[argv.index('--app') + 1]}.py").is_file(), command
        group, sub = argv[argv.index("--app") + 2:argv.index("--app") + 4]
        assert group == "etl" and sub in etl.commands, command


def test_the_processes_of_the_compose_stack_are_all_there(blueprint: dict[str, Any]) -> None:
    starts = {s["name"]: s["startCommand"] for s in app_services(blueprint)}

    # `sh docker/require-login.sh NAME` in front checks a login, then runs the rest.
    programs = [re.sub(r"^sh docker/require-login\.sh \w+ ", "", s["startCommand"]).split()[0]
                for s in services(blueprint, "web")]
    assert programs == ["gunicorn", "celery"]
    assert sum(" worker " in c for c in starts.values()) == 1
    assert sum(" beat " in c for c in starts.values()) == 1  # two beats would schedule every run twice
    assert any(" flower " in c for c in starts.values())
    assert len(services(blueprint, "keyvalue")) == 1 and len(blueprint["databases"]) == 1
    (api,) = [s for s in services(blueprint, "web") if s["startCommand"].startswith("gunicorn")]
    assert api["preDeployCommand"] == "flask --app wsgi etl init-db"


def test_every_command_refers_to_files_modules_and_commands_that_exist(blueprint: dict[str, Any]) -> None:
    for service in app_services(blueprint):
        for key in ("buildCommand", "startCommand", "preDeployCommand"):
            if key in service:
                command_refers_to_existing_things(service[key])


def test_every_variable_is_one_something_reads_and_every_service_has_what_it_needs(
        blueprint: dict[str, Any]) -> None:
    known = names_the_app_reads() | OTHER_READERS
    databases = {d["name"] for d in blueprint["databases"]}
    keyvalues = {s["name"] for s in services(blueprint, "keyvalue")}
    for service in app_services(blueprint):
        env = variables(service, blueprint)
        assert set(env) <= known, f"{service['name']}: {sorted(set(env) - known)} are read by nothing"
        assert env["DATABASE_URL"]["fromDatabase"]["name"] in databases, service["name"]
        assert env["BROKER_URL"]["fromService"]["name"] in keyvalues, service["name"]
        assert env["APP_ENV"]["value"] == "production" and env["LOG_FORMAT"]["value"] == "json"
    needs = {"gunicorn ": "API_KEY", "celery -A kasparro.worker flower": "FLOWER_BASIC_AUTH"}
    for service in app_services(blueprint):
        for start, name in needs.items():
            if start in service["startCommand"]:
                assert name in variables(service, blueprint), f"{service['name']} lacks {name}"


def test_no_secret_is_committed(blueprint: dict[str, Any]) -> None:
    for service in app_services(blueprint):
        for name, entry in variables(service, blueprint).items():
            if SECRET_NAME.search(name):
                assert "value" not in entry, f"{service['name']}: {name} has a committed value"
                assert entry.get("sync") is False or entry.get("generateValue") is True, name


@pytest.mark.parametrize("login", [None, "", "admin", "admin:", ":secret", "admin:secret,guest"])
def test_flower_refuses_to_start_on_render_without_a_login(blueprint: dict[str, Any], login: str | None) -> None:
    (flower,) = [s for s in app_services(blueprint) if " flower " in s["startCommand"]]
    argv = shlex.split(flower["startCommand"])
    assert argv[:3] == ["sh", "docker/require-login.sh", "FLOWER_BASIC_AUTH"] and (ROOT / argv[1]).is_file()
    env = {k: v for k, v in os.environ.items() if k != "FLOWER_BASIC_AUTH"} | (
        {"FLOWER_BASIC_AUTH": login} if login is not None else {})

    # What Render would run, with `echo` standing in for Flower: it must never be reached.
    done = subprocess.run([*argv[:3], "echo", "flower started"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=30, check=False)

    assert done.returncode == 1 and "flower started" not in done.stdout
    assert "FLOWER_BASIC_AUTH" in done.stderr


def test_flower_starts_on_render_with_a_login(blueprint: dict[str, Any]) -> None:
    (flower,) = [s for s in app_services(blueprint) if " flower " in s["startCommand"]]
    argv = shlex.split(flower["startCommand"])

    done = subprocess.run([*argv[:3], "echo", "flower started"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "FLOWER_BASIC_AUTH": "admin:s3cret*,guest:other"}, timeout=30, check=True)

    assert done.stdout == "flower started\n"
