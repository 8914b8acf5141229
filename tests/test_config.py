"""Settings come from the environment, over .env, and malformed values fail loudly."""
from __future__ import annotations

from pathlib import Path

import pytest

from kasparro.config import ConfigError, check_timing, load_config, read_environment


def test_the_environment_wins_over_the_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("API_KEY=from-file\nETL_INTERVAL_SECONDS=60\n")
    monkeypatch.setenv("API_KEY", "from-environment")

    env = read_environment(str(env_file))

    assert (env["API_KEY"], env["ETL_INTERVAL_SECONDS"]) == ("from-environment", "60")


def test_no_api_key_means_none_not_a_default() -> None:
    assert load_config({})["API_KEY"] is None
    assert load_config({"API_KEY": ""})["API_KEY"] is None


def test_empty_settings_fall_back_to_their_defaults() -> None:
    config = load_config({"ETL_INTERVAL_SECONDS": "", "COINGECKO_BASE_URL": ""})

    assert (config["ETL_INTERVAL_SECONDS"], config["COINGECKO_BASE_URL"]) == (300, None)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("ETL_INTERVAL_SECONDS", "often", "must be an integer"),
    ("ETL_INTERVAL_SECONDS", "1", "must be >= 5"),
    ("READS_REQUIRE_KEY", "maybe", "must be a boolean"),
    ("TASK_BACKOFF_BASE_SECONDS", "x", "must be a number"),
    ("QUALITY_VOLUME_FACTOR", "0.5", "must be >= 1"),
    ("QUALITY_DISAGREEMENT_BUCKET", "week", "must be hour or day"),
])
def test_a_malformed_setting_is_refused_with_its_name(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"{name} {message}"):
        load_config({name: value})


def test_provider_keys_are_collected_as_secrets_but_the_api_key_is_not() -> None:
    secrets = load_config({"API_KEY": "k", "COINGECKO_API_KEY": "g", "COINPAPRIKA_API_KEY": ""})["SECRETS"]

    assert secrets == {"COINGECKO_API_KEY": "g"}


def test_json_log_lines_carry_the_task_context(capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import logging

    from flask import Flask

    from kasparro import logs

    app = Flask(__name__)
    app.config.update(LOG_FORMAT="json", LOG_LEVEL="INFO")
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logs.init_app(app)
        logs._bind_task(task_id="t-1", task=None)
        logs.bind(run_id=7, source="coingecko")
        logging.getLogger("kasparro.test").info("batch loaded")
        logs._clear_task()
        logging.getLogger("kasparro.test").info("after the task")
    finally:
        root.handlers, root.level = saved

    first, second = (json.loads(line) for line in capsys.readouterr().err.strip().splitlines()[-2:])
    assert (first["message"], first["task_id"], first["run_id"], first["source"]) == ("batch loaded", "t-1", 7,
                                                                                       "coingecko")
    assert "run_id" not in second


def test_the_shipped_timing_resumes_a_dead_workers_source_within_two_minutes() -> None:
    config = load_config({})

    assert check_timing(config) == []
    worst = max(config["LEASE_SECONDS"], config["WORKER_LIVENESS_TTL_SECONDS"]) + config["REAPER_INTERVAL_SECONDS"]
    assert worst <= 120


@pytest.mark.parametrize("settings", [
    {"BROKER_VISIBILITY_TIMEOUT_SECONDS": "1800"},  # the default soft limit is 1800 s: a live task redelivered
    {"BROKER_VISIBILITY_TIMEOUT_SECONDS": "100", "TASK_SOFT_TIME_LIMIT_SECONDS": "30"},  # backoff cap 300 s
])
def test_a_visibility_timeout_shorter_than_a_task_or_its_retry_countdown_is_refused(settings: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="BROKER_VISIBILITY_TIMEOUT_SECONDS"):
        check_timing(load_config(settings))


def test_a_slow_resume_is_allowed_but_warned_about() -> None:
    (warning,) = check_timing(load_config({"LEASE_SECONDS": "600"}))

    assert "630s" in warning


def test_fault_injection_is_refused_in_production() -> None:
    with pytest.raises(ConfigError, match="refused"):
        check_timing(load_config({"APP_ENV": "production", "FAULT_INJECTION": "daily:load:10:exit"}))
    assert check_timing(load_config({"FAULT_INJECTION": "daily:load:10:exit"})) == []


def test_the_quality_thresholds_have_the_documented_defaults() -> None:
    from kasparro.pipeline.quality import Thresholds

    limits = Thresholds.from_config(load_config({"QUALITY_PRICE_JUMP": "0.25"}))

    assert limits == Thresholds(price_jump=0.25)
    assert (limits.history_runs, limits.min_history, limits.volume_factor, limits.slow_factor,
            limits.slow_min_seconds, limits.disagreement, limits.disagreement_bucket, limits.max_findings) == \
        (5, 3, 4, 3, 60, 0.1, "day", 100)
