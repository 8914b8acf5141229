"""Resolve which sources this deployment runs, with their settings, from sources.toml and the environment."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kasparro.errors import SourceConfigError
from kasparro.sources import load_specs

# Where the fake upstream server serves each API kind, for offline runs.
OFFLINE_PATHS = {"coinpaprika": "/coinpaprika/v1", "coingecko": "/coingecko/api/v3"}
# Kinds read from one `url` (news feeds): offline, each source reads the fake upstream's
# `offline_path` (default /rss/<source name>), and `url` keeps the real feed.
OFFLINE_URL_KINDS = ("rss",)


def _base_url(spec: Mapping[str, Any], config: Mapping[str, Any]) -> str | None:
    kind = spec["kind"]
    explicit = config.get(f"{kind.upper()}_BASE_URL")
    if explicit:
        return explicit
    if config.get("OFFLINE") and kind in OFFLINE_PATHS:
        return config["FAKE_UPSTREAM_URL"].rstrip("/") + OFFLINE_PATHS[kind]
    return spec.get("base_url")


def _offline_url(name: str, spec: Mapping[str, Any], config: Mapping[str, Any]) -> str | None:
    if not config.get("OFFLINE") or spec["kind"] not in OFFLINE_URL_KINDS:
        return None
    path = str(spec.get("offline_path") or f"/rss/{name}")
    return config["FAKE_UPSTREAM_URL"].rstrip("/") + "/" + path.lstrip("/")


def declared_sources(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Return every enabled source's settings, with environment overrides applied."""
    specs = load_specs(config["SOURCES_FILE"])
    wanted = config.get("ENABLED_SOURCES") or [n for n, s in specs.items() if s.get("enabled", True)]
    unknown = sorted(set(wanted) - set(specs))
    if unknown:
        raise SourceConfigError(f"ENABLED_SOURCES names unknown sources: {', '.join(unknown)}")
    resolved = {}
    for name in wanted:
        spec = dict(specs[name])
        base_url = _base_url(spec, config)
        if base_url:
            spec["base_url"] = base_url
        offline_url = _offline_url(name, spec, config)
        if offline_url:
            spec["url"] = offline_url
        resolved[name] = spec
    return resolved


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
