"""The observability profile's files: alert rules proven by promtool, a valid scrape config, and a dashboard
and rules that only name metrics a real /metrics scrape exposes.

promtool comes from Debian's `prometheus` package; .ci/run installs it and sets REQUIRE_PROMTOOL=1, so in CI
these tests run instead of skipping.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from tests.tools import skip_unless_required
from tests.api.conftest import make_app  # noqa: F401 - the fixture, for an app on a Redis of its own
from tests.api.test_metrics import liveness_in_redis, seed_figures

ROOT = Path(__file__).resolve().parents[1]
OBSERVABILITY = ROOT / "docker" / "observability"
PROMETHEUS = OBSERVABILITY / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERT_TESTS = PROMETHEUS / "alerts_test.yml"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "kasparro-etl.json"
PROVISIONING = OBSERVABILITY / "grafana" / "provisioning"

# What issue 12 asks an on-call engineer to be told about, and the dashboard to show.
REQUIRED_ALERTS = {"EtlRunFailed", "EtlSourceStale", "EtlRejectRateHigh", "EtlNoLiveWorker", "EtlBeatSilent",
                   "EtlSourceReturnedNoRows", "EtlRunStuck"}
# Alerts about the whole system rather than one source: their text names no source.
SYSTEM_ALERTS = {"EtlNoLiveWorker", "EtlBeatSilent", "EtlMetricsUnavailable"}
REQUIRED_PANELS = {"Runs per status", "Rows loaded and rejected per source", "Freshness per source vs schedule",
                   "Run duration per source", "Rate-limit waits and 429s", "Drift and anomaly events",
                   "API latency p50 / p95 / p99", "API error rate"}
# Prometheus's own series, not ours.
PROMETHEUS_SERIES = {"up"}


@pytest.fixture(scope="module")
def promtool() -> str:
    """Return promtool's path; fail when CI requires it, skip (saying how to install it) otherwise."""
    found = shutil.which("promtool")
    if found:
        return found
    reason = ("promtool not found: install Debian's prometheus package "
              "(apt-get install -y --no-install-recommends prometheus), as .ci/run does")
    skip_unless_required("REQUIRE_PROMTOOL", reason)


def run(promtool: str, *args: str, stdin: str | None = None, cwd: Path = PROMETHEUS) -> str:
    result = subprocess.run([promtool, *args], input=stdin, capture_output=True, text=True, cwd=cwd, check=False,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def panel_exprs() -> dict[str, list[str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return {panel["title"]: [target["expr"] for target in panel["targets"]] for panel in panels}


def metric_names(expr: str) -> set[str]:
    """Return the series an expression selects: identifiers before `{`, `[`, `)`, an operator or the end."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "{}", without_strings)
    without_clauses = re.sub(r"\b(?:by|on|ignoring|group_left|group_right|without)\s*\([^)]*\)", "", without_labels)
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", without_clauses))
    return {name for name in names if name.startswith("kasparro_") or name in PROMETHEUS_SERIES}


@pytest.fixture
def scrape(app: Flask, make_app: Callable[..., Flask]) -> str:  # noqa: F811 - make_app is the fixture
    """Return /metrics as Prometheus would read it, with runs, findings, drift, requests, workers and beat."""
    with app.app_context():
        seed_figures()
    with liveness_in_redis(workers=1, beat_age=5) as url:
        client = make_app(REDIS_URL=url).test_client()
        client.get("/health/live")
        client.get("/runs/424242")
        return client.get("/metrics").get_data(as_text=True)


def exposed(scrape: str) -> set[str]:
    return {sample.name for family in text_string_to_metric_families(scrape) for sample in family.samples}


# --------------------------------------------------------------------------
# promtool


def test_alert_rules_pass_promtool_check(promtool: str) -> None:
    assert "SUCCESS" in run(promtool, "check", "rules", str(ALERTS))


def test_every_alert_fires_on_its_case_and_stays_quiet_otherwise(promtool: str) -> None:
    assert "SUCCESS" in run(promtool, "test", "rules", ALERT_TESTS.name)


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    cases = [case for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    for rule in rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{rule['alert']} is never shown to fire"
        assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']} is never shown to stay quiet"


def test_the_metrics_endpoint_passes_promtool_check_metrics(promtool: str, scrape: str) -> None:
    run(promtool, "check", "metrics", stdin=scrape)
    assert "kasparro_last_run_status" in scrape and "kasparro_running_source_idle_seconds" in scrape


def test_the_rendered_prometheus_config_passes_promtool(promtool: str, tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_CONFIG_DIR": str(PROMETHEUS), "PROMETHEUS_RENDER_DIR": str(tmp_path),
           "PROMETHEUS_BIN": "echo", "FLOWER_BASIC_AUTH": "ops:pass:with:colons"}

    started = subprocess.run(["sh", str(PROMETHEUS / "start.sh")], env=env, capture_output=True, text=True,
                             check=True, timeout=30)

    assert f"--config.file={tmp_path}/prometheus.yml" in started.stdout
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    flower = next(job for job in config["scrape_configs"] if job["job_name"] == "flower")
    assert flower["basic_auth"]["username"] == "ops"
    assert (tmp_path / "flower_password").read_text() == "pass:with:colons"
    assert {job["job_name"] for job in config["scrape_configs"]} == {"kasparro-api", "flower"}
    assert "SUCCESS" in run(promtool, "check", "config", str(tmp_path / "prometheus.yml"))


def test_start_script_refuses_a_login_without_a_password(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_CONFIG_DIR": str(PROMETHEUS), "PROMETHEUS_RENDER_DIR": str(tmp_path),
           "PROMETHEUS_BIN": "echo", "FLOWER_BASIC_AUTH": "just-a-user"}

    started = subprocess.run(["sh", str(PROMETHEUS / "start.sh")], env=env, capture_output=True, text=True,
                             check=False, timeout=30)

    assert started.returncode != 0 and "user:password" in started.stderr
    assert not (tmp_path / "prometheus.yml").exists()


# --------------------------------------------------------------------------
# the rules and the dashboard, read as data


def test_the_required_alerts_exist_with_for_severity_and_text() -> None:
    found = {rule["alert"]: rule for rule in rules()}
    assert REQUIRED_ALERTS <= set(found)
    for name, rule in found.items():
        assert rule.get("for"), f"{name} fires on a single evaluation"
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        if name not in SYSTEM_ALERTS:
            assert "$labels.source" in rule["annotations"]["summary"], f"{name} does not name the source"


def test_the_dashboard_has_every_panel_and_uses_the_provisioned_data_source() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "kasparro.yml").read_text())["providers"]

    assert REQUIRED_PANELS <= set(panel_exprs())
    [datasource] = datasources
    assert datasource["url"] == "http://prometheus:9090" and datasource["type"] == "prometheus"
    assert providers[0]["options"]["path"] == "/etc/grafana/dashboards"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert panel["targets"] and panel["description"], panel["title"]
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


def test_dashboard_and_alerts_name_only_metrics_a_real_scrape_exposes(scrape: str) -> None:
    available = exposed(scrape) | PROMETHEUS_SERIES
    used = {f"panel {title!r}": set().union(*map(metric_names, exprs)) for title, exprs in panel_exprs().items()}
    used |= {f"alert {rule['alert']}": metric_names(rule["expr"]) for rule in rules()}

    for where, names in used.items():
        assert names, f"{where} names no metric"
        assert names <= available, f"{where} names {sorted(names - available)}, which /metrics does not expose"


def test_metric_names_finds_series_but_not_functions_or_labels() -> None:
    expr = ('histogram_quantile(0.5, sum by (le) (rate(kasparro_http_request_duration_seconds_bucket'
            '{status=~"5.."}[5m]))) > on (instance) group_left () kasparro_x unless up')

    assert metric_names(expr) == {"kasparro_http_request_duration_seconds_bucket", "kasparro_x", "up"}
