"""Settings come from the environment, over .env, and malformed values fail loudly."""
from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kasparro.config import (
    API_KEY_MIN_DISTINCT,
    API_KEY_MIN_LENGTH,
    APP_ENVS,
    ConfigError,
    check_timing,
    load_config,
    read_environment,
)


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


@pytest.mark.parametrize("app_env", ["production", None])
def test_fault_injection_is_refused_unless_app_env_names_development_or_test(app_env: str | None) -> None:
    settings = {"FAULT_INJECTION": "daily:load:10:exit", **({"APP_ENV": app_env} if app_env else {})}

    with pytest.raises(ConfigError, match=f"FAULT_INJECTION is refused unless APP_ENV is development or test, "
                                          f"and it is {app_env or 'unset'}"):
        check_timing(load_config(settings))


@pytest.mark.parametrize("app_env", ["development", "test"])
def test_fault_injection_is_allowed_where_app_env_says_development_or_test(app_env: str) -> None:
    assert check_timing(load_config({"APP_ENV": app_env, "FAULT_INJECTION": "daily:load:10:exit"})) == []


@given(st.text(min_size=1, max_size=12).filter(lambda name: name not in APP_ENVS))
@settings(max_examples=50, deadline=None)
def test_an_app_env_we_do_not_know_is_refused_by_name(app_env: str) -> None:
    # `prod`, `Production`, `staging`: none may pass for one of ours, in either direction.
    with pytest.raises(ConfigError, match="APP_ENV must be one of development, test, production"):
        load_config({"APP_ENV": app_env})


@given(st.one_of(st.text(max_size=API_KEY_MIN_LENGTH - 1).filter(bool),
                 st.builds(lambda char, n: char * n, st.characters(), st.integers(API_KEY_MIN_LENGTH, 200)),
                 st.builds(lambda part, n: part * n, st.text(min_size=1, max_size=API_KEY_MIN_DISTINCT - 1),
                           st.integers(API_KEY_MIN_LENGTH, 64))))
@settings(max_examples=100, deadline=None)
def test_production_refuses_a_short_or_repetitive_api_key_and_names_the_rule(key: str) -> None:
    with pytest.raises(ConfigError, match=f"API_KEY is too weak for APP_ENV=production: .*\\(at least "
                                          f"{API_KEY_MIN_LENGTH} characters, {API_KEY_MIN_DISTINCT} of them different"):
        check_timing(load_config({"APP_ENV": "production", "API_KEY": key}))


def test_production_accepts_a_generated_key_and_development_accepts_any() -> None:
    generated = secrets.token_hex(24)  # what scripts/ensure-env.sh writes

    assert check_timing(load_config({"APP_ENV": "production", "API_KEY": generated})) == []
    # A past complaint: `API_KEY=x make run` must keep working.
    assert check_timing(load_config({"API_KEY": "x"})) == []
    assert check_timing(load_config({"APP_ENV": "development", "API_KEY": "x"})) == []
    # No key at all refuses every protected request; that is safe, so production allows it (workers need none).
    assert check_timing(load_config({"APP_ENV": "production"})) == []


def test_the_quality_thresholds_have_the_documented_defaults() -> None:
    from kasparro.pipeline.quality import Thresholds

    limits = Thresholds.from_config(load_config({"QUALITY_PRICE_JUMP": "0.25"}))

    assert limits == Thresholds(price_jump=0.25)
    assert (limits.history_runs, limits.min_history, limits.volume_factor, limits.slow_factor,
            limits.slow_min_seconds, limits.disagreement, limits.disagreement_bucket, limits.max_findings) == \
        (5, 3, 4, 3, 60, 0.1, "day", 100)
