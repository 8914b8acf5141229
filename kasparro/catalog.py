"""Resolve which sources this deployment runs, with their settings, from sources.toml and the environment."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kasparro.errors import SourceConfigError
from kasparro.redact import redact_url
from kasparro.sources import can_backfill, load_specs

# Where the fake upstream server serves each API kind, for offline runs.
OFFLINE_PATHS = {"coinpaprika": "/coinpaprika/v1", "coingecko": "/coingecko/api/v3"}
# Kinds read from one `url` (news feeds): offline, each source reads the fake upstream's
# `offline_path` (default /rss/<source name>), and `url` keeps the real feed.
OFFLINE_URL_KINDS = ("rss",)
# Kinds declared by a `base_url` (APIs declared in sources.toml): offline, `offline_path` replaces the
# host part, so `https://api.binance.com` becomes the fake upstream's `/binance`, and the path stays.
OFFLINE_BASE_KINDS = ("http",)


def _base_url(spec: Mapping[str, Any], config: Mapping[str, Any]) -> str | None:
    kind = spec["kind"]
    explicit = config.get(f"{kind.upper()}_BASE_URL")
    if explicit:
        return explicit
    if config.get("OFFLINE") and kind in OFFLINE_PATHS:
        return config["FAKE_UPSTREAM_URL"].rstrip("/") + OFFLINE_PATHS[kind]
    if config.get("OFFLINE") and kind in OFFLINE_BASE_KINDS and spec.get("offline_path"):
        return config["FAKE_UPSTREAM_URL"].rstrip("/") + "/" + str(spec["offline_path"]).strip("/")
    return spec.get("base_url")


def _offline_url(name: str, spec: Mapping[str, Any], config: Mapping[str, Any]) -> str | None:
    if not config.get("OFFLINE") or spec["kind"] not in OFFLINE_URL_KINDS:
        return None
    path = str(spec.get("offline_path") or f"/rss/{name}")
    return config["FAKE_UPSTREAM_URL"].rstrip("/") + "/" + path.lstrip("/")


def _enabled(specs: Mapping[str, Mapping[str, Any]], config: Mapping[str, Any]) -> list[str]:
    wanted = config.get("ENABLED_SOURCES")
    if not wanted:
        return [n for n, s in specs.items() if s.get("enabled", True)]
    unknown = sorted(set(wanted) - set(specs))
    if unknown:
        raise SourceConfigError(f"ENABLED_SOURCES names unknown sources: {', '.join(unknown)}")
    # ENABLED_SOURCES narrows; it never overrides the file's `enabled = false`, a decision about that source
    # (a provider that is paid for, broken or retired). Ignoring the name quietly would hide the conflict.
    disabled = [n for n in wanted if not specs[n].get("enabled", True)]
    if disabled:
        raise SourceConfigError(f"ENABLED_SOURCES names sources disabled in SOURCES_FILE (enabled = false): "
                                f"{', '.join(disabled)}; set enabled = true there, or leave them out")
    return list(wanted)


def check_enabled(config: Mapping[str, Any]) -> None:
    """Raise SourceConfigError when ENABLED_SOURCES names a source SOURCES_FILE lacks or declares disabled."""
    if config.get("ENABLED_SOURCES"):
        _enabled(load_specs(config["SOURCES_FILE"]), config)


def _resolved(name: str, spec: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    resolved = dict(spec)
    base_url = _base_url(spec, config)
    if base_url:
        resolved["base_url"] = base_url
    offline_url = _offline_url(name, spec, config)
    if offline_url:
        resolved["url"] = offline_url
    if spec["kind"] in OFFLINE_BASE_KINDS:
        resolved.pop("offline_path", None)  # a deployment setting, not the kind's
    return resolved


def declared_sources(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Return every enabled source's settings, with environment overrides applied."""
    specs = load_specs(config["SOURCES_FILE"])
    return {name: _resolved(name, specs[name], config) for name in _enabled(specs, config)}


# Settings whose names suggest a secret are never shown; `*_env` settings only name a variable.
_SECRET_HINTS = ("key", "secret", "token", "password", "credential")


def public_settings(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Return a source's settings fit to show: secret-looking ones dropped, URLs with credentials masked."""
    shown: dict[str, Any] = {}
    for name, value in spec.items():
        if name == "kind" or (any(h in name.lower() for h in _SECRET_HINTS) and not name.endswith("_env")):
            continue
        shown[name] = public_settings(value) if isinstance(value, Mapping) else \
            redact_url(value) if isinstance(value, str) else value
    return shown


def source_listing(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Return every declared source, enabled or not: name, kind, enabled, and its settings fit to show."""
    specs = load_specs(config["SOURCES_FILE"])
    enabled = set(_enabled(specs, config))
    return [{"name": name, "kind": spec["kind"], "enabled": name in enabled,
             "settings": public_settings(_resolved(name, spec, config))} for name, spec in specs.items()]


def declared_source(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Return one declared source's settings, enabled or not, with environment overrides applied."""
    specs = load_specs(config["SOURCES_FILE"])
    if name not in specs:
        raise SourceConfigError(f"unknown source {name!r}; {config['SOURCES_FILE']} declares: "
                                f"{', '.join(sorted(specs)) or 'none'}")
    return _resolved(name, specs[name], config)


def backfill_sources(config: Mapping[str, Any]) -> list[str]:
    """Return the enabled sources whose kind can read a past window, by name."""
    return sorted(name for name, spec in declared_sources(config).items() if can_backfill(spec["kind"]))


def select_sources(config: Mapping[str, Any], names: Iterable[str] | None) -> dict[str, dict[str, Any]]:
    """Return the settings of `names` (all enabled sources when None); unknown names raise."""
    available = declared_sources(config)
    if names is None:
        if not available:
            raise SourceConfigError("no sources are enabled: declare some in SOURCES_FILE or fix ENABLED_SOURCES")
        return available
    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in available]
    if unknown:
        raise SourceConfigError(f"unknown or disabled sources: {', '.join(unknown)}")
    return {n: available[n] for n in names}
