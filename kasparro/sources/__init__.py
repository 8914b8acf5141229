"""Keep the registry of source kinds and build sources from their declared settings.

Each kind lives in its own module and registers a factory under its `kind`
name; a source is declared in `sources.toml` (name, kind, settings) and built
here, with secrets and shared helpers handed in through a `SourceContext`.
"""
from __future__ import annotations

import importlib
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kasparro.errors import SourceConfigError
from kasparro.sources.base import RequestStats, Source

SourceFactory = Callable[[str, Mapping[str, Any], "SourceContext"], Source]
KINDS: dict[str, SourceFactory] = {}
# Modules that register kinds; imported lazily so a missing optional kind
# cannot break the others.
KIND_MODULES = ("kasparro.sources.csv_file", "kasparro.sources.json_file", "kasparro.sources.coinpaprika",
                "kasparro.sources.coingecko", "kasparro.sources.rss", "kasparro.sources.http_api")


@dataclass
class SourceContext:
    """What a source may use besides its settings: secrets, a request budget, and a place to count."""

    secrets: Mapping[str, str] = field(default_factory=dict)
    base_dir: Path = Path(".")
    stats: RequestStats = field(default_factory=RequestStats)
    budget: Any = None  # a kasparro.sources.ratelimit.RedisBudgets shared across processes, when set


def register(kind: str) -> Callable[[SourceFactory], SourceFactory]:
    """Register a factory for sources of `kind`."""

    def decorator(factory: SourceFactory) -> SourceFactory:
        KINDS[kind] = factory
        return factory

    return decorator


def _import_kinds() -> None:
    for module in KIND_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def build_source(name: str, spec: Mapping[str, Any], context: SourceContext) -> Source:
    """Build the source `name` from its declared settings."""
    _import_kinds()
    kind = spec.get("kind")
    if kind not in KINDS:
        raise SourceConfigError(f"unknown source kind {kind!r}", source=name)
    return KINDS[kind](name, spec, context)


def target_of(spec: Mapping[str, Any]) -> str:
    """Return what a declared source's records become: "quotes" unless its kind says otherwise ("news")."""
    _import_kinds()
    return getattr(KINDS.get(spec.get("kind")), "target", "quotes")


def ids_kind(spec: Mapping[str, Any]) -> str:
    """Return the kind whose coin ids a source uses: its `ids` setting, else its own kind."""
    # A file drop in CoinPaprika's layout carries CoinPaprika ids, so identity applies that kind's slug rule
    # and overrides.
    return str(spec.get("ids", spec["kind"]))


def can_backfill(kind: str) -> bool:
    """Return whether sources of `kind` can read a past window (see `kasparro.sources.window`)."""
    _import_kinds()
    return hasattr(KINDS.get(kind), "window_pages")


def load_specs(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read the declared sources from a TOML file: {name: settings}."""
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise SourceConfigError(f"sources file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise SourceConfigError(f"sources file {path} is not valid TOML: {exc}") from None
    specs = document.get("sources", {})
    for name, spec in specs.items():
        if not isinstance(spec, dict) or "kind" not in spec:
            raise SourceConfigError("every source needs a 'kind'", source=name)
    return specs
