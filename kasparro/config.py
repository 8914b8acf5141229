"""Read the service's settings from the environment (and an optional `.env`)."""
from __future__ import annotations

import importlib.util
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from kasparro.redact import redact_url
from kasparro.sources.base import DEFAULT_BATCH_BYTES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Where beat leaves its heartbeat (unix time) for /health to read.
HEARTBEAT_KEY = "kasparro:beat:last_seen"
# Where beat publishes when each schedule entry is next due (a hash: entry name -> unix time), for GET /sources.
NEXT_RUN_KEY = "kasparro:beat:next_run"
# The beat schedule entry that starts ETL runs.
ETL_SCHEDULE_ENTRY = "etl-run"
# The beat schedule entry that keeps market_quotes' partitions (kasparro.pipeline.partitions).
PARTITIONS_SCHEDULE_ENTRY = "quote-partitions"


class ConfigError(ValueError):
    """A setting is missing or malformed."""


def parse_bool(name: str, value: str) -> bool:
    """Parse a boolean setting strictly, so a typo fails loudly instead of meaning False."""
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name} must be a boolean, got {value!r}")


def _parse_number(name: str, value: str, kind: type[int] | type[float], minimum: float) -> Any:
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {number}")
    return number


def parse_int(name: str, value: str, minimum: int = 0) -> int:
    """Parse an integer setting and check its lower bound."""
    return _parse_number(name, value, int, minimum)


def parse_float(name: str, value: str, minimum: float = 0.0) -> float:
    """Parse a number setting and check its lower bound."""
    return _parse_number(name, value, float, minimum)


# The drivers a PostgreSQL URL may name; psycopg2 is the one requirements.txt installs.
DEFAULT_DRIVER = "psycopg2"
POSTGRES_DRIVERS = ("psycopg2", "psycopg")


def normalise_database_url(url: str) -> str:
    """Rewrite a PostgreSQL URL's scheme to name an installed driver, leaving the rest byte for byte."""
    scheme, separator, rest = url.strip().partition("://")
    dialect, _, driver = scheme.lower().partition("+")
    if not separator or dialect not in ("postgres", "postgresql") or driver not in ("", *POSTGRES_DRIVERS):
        # Name the scheme only: the rest may hold a password.
        shown = f"{scheme}://..." if separator else "no scheme"
        raise ConfigError(f"DATABASE_URL must be postgres://, postgresql:// or postgresql+psycopg2://..., got {shown}")
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, and knows no postgres:// at all (Heroku, Render).
    if driver != "psycopg" or importlib.util.find_spec("psycopg") is None:
        driver = DEFAULT_DRIVER
    return f"postgresql+{driver}://{rest}"


REDIS_SCHEMES = ("redis", "rediss")


def parse_redis_url(name: str, url: str) -> str:
    """Check that a Redis setting is a redis:// or rediss:// URL, so a wrong one stops start-up in one line."""
    scheme, separator, _ = url.strip().partition("://")
    if not separator or scheme.lower() not in REDIS_SCHEMES:
        # Name the scheme only: the rest may hold a password.
        shown = f"{scheme}://..." if separator else "no scheme"
        raise ConfigError(f"{name} must be redis://... or rediss://..., got {shown}")
    return url


def describe_connections(config: Mapping[str, Any]) -> str:
    """Say which database, broker and Redis the settings point at, with passwords masked."""
    return (f"database {redact_url(str(config['SQLALCHEMY_DATABASE_URI']))}, "
            f"broker {redact_url(config['BROKER_URL'])}, redis {redact_url(config['REDIS_URL'])}")


def read_environment(env_file: str | None = None) -> dict[str, str]:
    """Merge `.env` under the process environment: variables already set win."""
    path = env_file if env_file is not None else os.environ.get("ENV_FILE", str(PROJECT_ROOT / ".env"))
    values: dict[str, str] = {}
    if path and Path(path).is_file():
        values.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    values.update(os.environ)
    return values


# What APP_ENV may say. Only these two allow FAULT_INJECTION, and only when named: unset is not enough.
APP_ENVS = ("development", "test", "production")
FAULT_INJECTION_ENVS = ("development", "test")
# A production API_KEY is at least this long with at least this many different characters. 24 random hex
# characters are 96 bits, far past online guessing (the key is only ever tried against the API); what
# ensure-env.sh (48 hex) and Render's generateValue make passes, "x" or "changeme" or "aaaa..." does not.
API_KEY_MIN_LENGTH = 24
API_KEY_MIN_DISTINCT = 8


def parse_app_env(value: str) -> str | None:
    """Return APP_ENV (None when unset), refusing a name we do not know: `prod` must not pass for production."""
    if not value:
        return None
    if value not in APP_ENVS:
        raise ConfigError(f"APP_ENV must be one of {', '.join(APP_ENVS)} (or unset), got {value!r}")
    return value


def weak_key_reason(key: str) -> str | None:
    """Say why `key` is too weak to guard a production API, or None when it is strong enough."""
    if len(key) < API_KEY_MIN_LENGTH:
        return f"it has {len(key)} characters, fewer than {API_KEY_MIN_LENGTH}"
    if len(set(key)) < API_KEY_MIN_DISTINCT:
        return f"it has {len(set(key))} different characters, fewer than {API_KEY_MIN_DISTINCT}"
    return None


def check_safety(config: Mapping[str, Any]) -> None:
    """Refuse a weak API_KEY in production, and FAULT_INJECTION unless APP_ENV names development or test."""
    app_env, key = config.get("APP_ENV"), config.get("API_KEY")
    if app_env == "production" and key and (reason := weak_key_reason(key)):
        raise ConfigError(f"API_KEY is too weak for APP_ENV=production: {reason} (at least {API_KEY_MIN_LENGTH} "
                          f"characters, {API_KEY_MIN_DISTINCT} of them different; make env generates one)")
    # `exit` kills a worker: a deployment that forgot APP_ENV must not be one setting away from it.
    if config.get("FAULT_INJECTION") and app_env not in FAULT_INJECTION_ENVS:
        raise ConfigError(f"FAULT_INJECTION is refused unless APP_ENV is development or test, and it is "
                          f"{app_env or 'unset'}")


def load_config(env: Mapping[str, str]) -> dict[str, Any]:
    """Build the Flask config mapping from environment-style strings."""
    def get(name: str, default: str = "") -> str:
        # Compose passes unset optional settings as empty strings: treat them as unset.
        return env.get(name) or default

    database_url = normalise_database_url(get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/kasparro"))
    broker_url = parse_redis_url("BROKER_URL", get("BROKER_URL", "redis://127.0.0.1:6379/0"))
    return {
        "SQLALCHEMY_DATABASE_URI": database_url,
        # A database that does not answer fails a connection in seconds, so a task retries instead of hanging.
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}},
        # The API's reads (GET /data, /stats, ...) go here: a replica, or a pooler in front of one. Unset: the
        # same database as everything else. Writes, and every worker, keep DATABASE_URL.
        "DATABASE_READ_URL": normalise_database_url(get("DATABASE_READ_URL")) if get("DATABASE_READ_URL") else None,
        "BROKER_URL": broker_url,
        "RESULT_BACKEND": parse_redis_url("RESULT_BACKEND", get("RESULT_BACKEND", broker_url)),
        # Rate-limit budgets and locks live here; the broker's Redis by default.
        "REDIS_URL": parse_redis_url("REDIS_URL", get("REDIS_URL", broker_url)),
        "TASK_QUEUE": get("TASK_QUEUE", "kasparro"),
        # Prefix of the Redis keys holding per-source request budgets.
        "RATE_LIMIT_PREFIX": get("RATE_LIMIT_PREFIX", "kasparro:ratelimit"),
        # Length of a budget's window: `requests_per_minute` are allowed per window (tests shorten it).
        "RATE_LIMIT_WINDOW_SECONDS": parse_float("RATE_LIMIT_WINDOW_SECONDS",
                                                 get("RATE_LIMIT_WINDOW_SECONDS", "60"), 0.1),
        # No default: an unset key means the protected endpoints refuse everyone.
        "API_KEY": get("API_KEY") or None,
        # Request bodies: bytes (413 past it) and JSON nesting (400 past it); our own POST bodies are small and flat.
        "MAX_REQUEST_BYTES": parse_int("MAX_REQUEST_BYTES", get("MAX_REQUEST_BYTES", "1048576"), 1024),
        "MAX_REQUEST_DEPTH": parse_int("MAX_REQUEST_DEPTH", get("MAX_REQUEST_DEPTH", "32"), 2),
        "READS_REQUIRE_KEY": parse_bool("READS_REQUIRE_KEY", get("READS_REQUIRE_KEY", "false")),
        # A raw chunk is loaded by its transform (no staging write); false: always stage.
        "LOAD_IN_TRANSFORM": parse_bool("LOAD_IN_TRANSFORM", get("LOAD_IN_TRANSFORM", "true")),
        "ETL_INTERVAL_SECONDS": parse_int("ETL_INTERVAL_SECONDS", get("ETL_INTERVAL_SECONDS", "300"), 5),
        "ETL_RUN_ON_START": parse_bool("ETL_RUN_ON_START", get("ETL_RUN_ON_START", "true")),
        "SOURCES_FILE": get("SOURCES_FILE", str(PROJECT_ROOT / "sources.toml")),
        "ENABLED_SOURCES": [s.strip() for s in get("ENABLED_SOURCES", "").split(",") if s.strip()],
        # Unset: each kind's own default (a page of records 5000, a raw chunk of a file's lines 20000).
        "BATCH_SIZE": parse_int("BATCH_SIZE", get("BATCH_SIZE"), 1) if get("BATCH_SIZE") else None,
        # Bytes per batch beside the count: a raw chunk or a page closes before it would pass them.
        "BATCH_MAX_BYTES": parse_int("BATCH_MAX_BYTES", get("BATCH_MAX_BYTES", str(DEFAULT_BATCH_BYTES)), 1024),
        # market_quotes has a partition per month (README, "Past one database"): beat makes this many months'
        # ahead every day, and drops the months wholly older than QUOTES_RETENTION_MONTHS (0: keep every month).
        "QUOTES_PARTITION_MONTHS_AHEAD": parse_int("QUOTES_PARTITION_MONTHS_AHEAD",
                                                   get("QUOTES_PARTITION_MONTHS_AHEAD", "3"), 0),
        "QUOTES_RETENTION_MONTHS": parse_int("QUOTES_RETENTION_MONTHS", get("QUOTES_RETENTION_MONTHS", "0"), 0),
        # Quotes of months before the current one that landed in DEFAULT stay there unless this is on.
        "QUOTES_PARTITION_HISTORY": parse_bool("QUOTES_PARTITION_HISTORY", get("QUOTES_PARTITION_HISTORY", "false")),
        # Task-level retries of transient failures: exponential backoff with full jitter.
        "TASK_MAX_RETRIES": parse_int("TASK_MAX_RETRIES", get("TASK_MAX_RETRIES", "5"), 0),
        "TASK_BACKOFF_BASE_SECONDS": parse_float("TASK_BACKOFF_BASE_SECONDS", get("TASK_BACKOFF_BASE_SECONDS", "2")),
        "TASK_BACKOFF_CAP_SECONDS": parse_float("TASK_BACKOFF_CAP_SECONDS", get("TASK_BACKOFF_CAP_SECONDS", "300")),
        # Delivery timing; check_timing() says how these must relate, and the README's Guarantees why.
        "LEASE_SECONDS": parse_int("LEASE_SECONDS", get("LEASE_SECONDS", "60"), 3),
        "REAPER_INTERVAL_SECONDS": parse_float("REAPER_INTERVAL_SECONDS", get("REAPER_INTERVAL_SECONDS", "30"), 1),
        "STALLED_AFTER_SECONDS": parse_int("STALLED_AFTER_SECONDS", get("STALLED_AFTER_SECONDS", "300"), 5),
        "RESUME_LIMIT": parse_int("RESUME_LIMIT", get("RESUME_LIMIT", "3"), 0),
        # A dead worker is known dead this long after its last sign of life (kasparro.liveness).
        "WORKER_LIVENESS_TTL_SECONDS": parse_float("WORKER_LIVENESS_TTL_SECONDS",
                                                   get("WORKER_LIVENESS_TTL_SECONDS", "30"), 1),
        "SOURCE_BUSY_MAX_WAIT_SECONDS": parse_float("SOURCE_BUSY_MAX_WAIT_SECONDS",
                                                    get("SOURCE_BUSY_MAX_WAIT_SECONDS", "900")),
        "TASK_SOFT_TIME_LIMIT_SECONDS": parse_int("TASK_SOFT_TIME_LIMIT_SECONDS",
                                                  get("TASK_SOFT_TIME_LIMIT_SECONDS", "1800"), 10),
        "BROKER_VISIBILITY_TIMEOUT_SECONDS": parse_int("BROKER_VISIBILITY_TIMEOUT_SECONDS",
                                                       get("BROKER_VISIBILITY_TIMEOUT_SECONDS", "3600"), 10),
        # None when unset: development's leniency, but no FAULT_INJECTION (check_safety says why).
        "APP_ENV": parse_app_env(get("APP_ENV")),
        # Deliberate failures for tests and demos (see kasparro.pipeline.faults); development and test only.
        "FAULT_INJECTION": get("FAULT_INJECTION"),
        # /health: beat is stale after this long without a heartbeat; timeouts of each probe.
        "HEALTH_BEAT_STALE_SECONDS": parse_float("HEALTH_BEAT_STALE_SECONDS", get("HEALTH_BEAT_STALE_SECONDS", "120")),
        "HEALTH_WORKER_TIMEOUT_SECONDS": parse_float("HEALTH_WORKER_TIMEOUT_SECONDS",
                                                     get("HEALTH_WORKER_TIMEOUT_SECONDS", "1")),
        "HEALTH_TIMEOUT_SECONDS": parse_float("HEALTH_TIMEOUT_SECONDS", get("HEALTH_TIMEOUT_SECONDS", "1")),
        # /health asks the workers at most once per this many seconds per API process (a ping is a broadcast).
        "HEALTH_WORKER_CACHE_SECONDS": parse_float("HEALTH_WORKER_CACHE_SECONDS",
                                                   get("HEALTH_WORKER_CACHE_SECONDS", "10")),
        # List endpoints (/rejects) show a stored payload whole only up to this many characters of its JSON.
        "API_PAYLOAD_PREVIEW_CHARS": parse_int("API_PAYLOAD_PREVIEW_CHARS",
                                               get("API_PAYLOAD_PREVIEW_CHARS", "1024"), 1),
        **_quality_settings(get),
        "LOG_FORMAT": get("LOG_FORMAT", "console"),
        "LOG_LEVEL": get("LOG_LEVEL", "INFO"),
        "ASSET_OVERRIDES_FILE": get("ASSET_OVERRIDES_FILE", str(PROJECT_ROOT / "data" / "asset_overrides.csv")),
        "OFFLINE": parse_bool("OFFLINE", get("OFFLINE", "false")),
        "FAKE_UPSTREAM_URL": get("FAKE_UPSTREAM_URL", "http://127.0.0.1:8900"),
        "COINPAPRIKA_BASE_URL": get("COINPAPRIKA_BASE_URL") or None,
        "COINGECKO_BASE_URL": get("COINGECKO_BASE_URL") or None,
        # Secrets for upstream APIs, by the name a source spec refers to them.
        "SECRETS": _source_secrets(env, get("SOURCES_FILE", str(PROJECT_ROOT / "sources.toml"))),
    }


def _quality_settings(get: Any) -> dict[str, Any]:
    """Thresholds of the data-quality rules (README, "Data quality")."""
    bucket = get("QUALITY_DISAGREEMENT_BUCKET", "day")
    if bucket not in ("hour", "day"):
        raise ConfigError(f"QUALITY_DISAGREEMENT_BUCKET must be hour or day, got {bucket!r}")
    return {
        # volume and slow_run compare a source run with the median of its last N finished runs,
        # once at least QUALITY_MIN_HISTORY of them exist.
        "QUALITY_HISTORY_RUNS": parse_int("QUALITY_HISTORY_RUNS", get("QUALITY_HISTORY_RUNS", "5"), 1),
        "QUALITY_MIN_HISTORY": parse_int("QUALITY_MIN_HISTORY", get("QUALITY_MIN_HISTORY", "3"), 1),
        "QUALITY_VOLUME_FACTOR": parse_float("QUALITY_VOLUME_FACTOR", get("QUALITY_VOLUME_FACTOR", "4"), 1),
        "QUALITY_SLOW_FACTOR": parse_float("QUALITY_SLOW_FACTOR", get("QUALITY_SLOW_FACTOR", "3"), 1),
        "QUALITY_SLOW_MIN_SECONDS": parse_float("QUALITY_SLOW_MIN_SECONDS", get("QUALITY_SLOW_MIN_SECONDS", "60")),
        # price_jump: relative move between consecutive observations of one asset from one source.
        "QUALITY_PRICE_JUMP": parse_float("QUALITY_PRICE_JUMP", get("QUALITY_PRICE_JUMP", "0.5"), 0.0001),
        # source_disagreement: relative distance from the cross-source median within one time bucket.
        "QUALITY_DISAGREEMENT": parse_float("QUALITY_DISAGREEMENT", get("QUALITY_DISAGREEMENT", "0.1"), 0.0001),
        "QUALITY_DISAGREEMENT_BUCKET": bucket,
        # At most this many findings per rule and source run; the rules stop after this many seconds.
        "QUALITY_MAX_FINDINGS": parse_int("QUALITY_MAX_FINDINGS", get("QUALITY_MAX_FINDINGS", "100"), 1),
        "QUALITY_TIMEOUT_SECONDS": parse_float("QUALITY_TIMEOUT_SECONDS", get("QUALITY_TIMEOUT_SECONDS", "30"), 0.1),
    }


def declared_key_names(sources_file: str) -> set[str]:
    """Return the variable names the sources in `sources_file` give as `api_key_env`."""
    try:
        with open(sources_file, "rb") as handle:
            sources = tomllib.load(handle).get("sources", {})
    except (OSError, tomllib.TOMLDecodeError):
        # The catalog reports a missing or broken file where sources are used; settings still load.
        return set()
    return {spec["api_key_env"] for spec in sources.values()
            if isinstance(spec, dict) and isinstance(spec.get("api_key_env"), str)}


def _source_secrets(env: Mapping[str, str], sources_file: str) -> dict[str, str]:
    names = declared_key_names(sources_file) | {k for k in env if k.endswith("_API_KEY")}
    # Our own key guards our API; no source may send it upstream, whatever sources.toml says.
    return {k: env[k] for k in sorted(names - {"API_KEY"}) if env.get(k)}


# The hard time limit leaves the soft one this long to record a failure before the process is killed.
HARD_LIMIT_MARGIN_SECONDS = 60
RESUME_TARGET_SECONDS = 120


def check_timing(config: Mapping[str, Any]) -> list[str]:
    """Check that time limits, leases and the broker's visibility timeout agree; return warnings, raise errors.

    A task still running, or waiting out a retry countdown, when the visibility
    timeout passes is delivered a second time; so the timeout must exceed the
    hard time limit and every countdown we ask for. Every process calls this at start, so it also
    runs check_safety.
    """
    check_safety(config)
    visibility = config["BROKER_VISIBILITY_TIMEOUT_SECONDS"]
    hard_limit = config["TASK_SOFT_TIME_LIMIT_SECONDS"] + HARD_LIMIT_MARGIN_SECONDS
    longest_countdown = max(config["TASK_BACKOFF_CAP_SECONDS"], config["LEASE_SECONDS"])
    if visibility <= hard_limit or visibility <= longest_countdown:
        raise ConfigError(f"BROKER_VISIBILITY_TIMEOUT_SECONDS ({visibility}) must exceed the hard task time limit "
                          f"({hard_limit}) and the longest retry countdown ({longest_countdown}), or a live task "
                          "is delivered twice")
    warnings = []
    resume = max(config["LEASE_SECONDS"], config["WORKER_LIVENESS_TTL_SECONDS"]) + config["REAPER_INTERVAL_SECONDS"]
    if resume > RESUME_TARGET_SECONDS:
        warnings.append(f"a source held by a dead worker resumes only after up to {resume:.0f}s (the longer of "
                        "LEASE_SECONDS and WORKER_LIVENESS_TTL_SECONDS, plus REAPER_INTERVAL_SECONDS); the target is "
                        f"{RESUME_TARGET_SECONDS}s")
    return warnings
