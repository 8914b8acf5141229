"""What an alert tells an operator to run or fetch exists: every `command` and `GET /path` in the annotations.

An annotation is read at 3 a.m. by someone who will type what it says; a command that is not there costs them
the first minutes of the incident.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from werkzeug.exceptions import MethodNotAllowed, NotFound

from kasparro import create_app
from tests.conftest import test_config as app_settings

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "docker" / "observability" / "prometheus" / "alerts.yml"
COMPOSE_FILE = ROOT / "docker-compose.yml"
# A template such as {{ $labels.run_id }} stands for a value of that label: any id or name will do.
TEMPLATE = re.compile(r"\{\{[^}]*\}\}")


def annotations() -> list[str]:
    """Return the text of every annotation of every alert rule."""
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [" ".join(str(text).split()) for group in groups for rule in group["rules"]
            for text in rule.get("annotations", {}).values()]


def commands() -> list[str]:
    return sorted({span for text in annotations() for span in re.findall(r"`([^`]+)`", text)})


def paths() -> list[str]:
    return sorted({path.rstrip(".,;:") for text in annotations()
                   for path in re.findall(r"\bGET (/\S+)", TEMPLATE.sub("1", text))})


def test_the_annotations_name_commands_and_endpoints() -> None:
    # The checks below loop over what they find: finding nothing would pass them all.
    assert any(command.startswith("flask ") for command in commands())
    assert any(command.startswith("docker compose ") for command in commands())
    assert paths()


@pytest.mark.parametrize("command", commands())
def test_every_command_an_alert_names_exists(command: str) -> None:
    words = shlex.split(command)
    if words[0] == "flask":
        # Its own help is what a command that exists answers; a missing one answers "No such command", status 2.
        result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *words[1:], "--help"], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    elif words[0] == "make":
        result = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    elif words[:4] == ["docker", "compose", "up", "-d"]:
        services = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]
        for name in words[4:]:
            # Started by a bare `up`: not only with a profile the operator would have to know about.
            assert name in services and not services[name].get("profiles"), name
    else:
        pytest.fail(f"an alert names `{command}`, which this test cannot check: teach it how")


@pytest.mark.parametrize("path", paths())
def test_every_endpoint_an_alert_names_is_served(path: str, sources_file: Path) -> None:
    urls = create_app(app_settings(sources_file)).url_map.bind("localhost")
    try:
        urls.match(path.split("?")[0], method="GET")
    except (NotFound, MethodNotAllowed):
        pytest.fail(f"an alert points at GET {path}, which the API does not serve")
