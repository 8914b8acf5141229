"""What a data-quality rule returns, and the thresholds every rule reads."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Thresholds:
    """The rules' settings (QUALITY_* in kasparro.config, defaults documented in the README)."""

    history_runs: int = 5
    min_history: int = 3
    volume_factor: float = 4.0
    slow_factor: float = 3.0
    slow_min_seconds: float = 60.0
    price_jump: float = 0.5
    disagreement: float = 0.1
    disagreement_bucket: str = "day"
    max_findings: int = 100
    timeout_seconds: float = 30.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Thresholds:
        """Read the thresholds from the app's settings."""
        return cls(**{name: config[f"QUALITY_{name.upper()}"] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Finding:
    """One thing a rule found wrong: observed against expected, with a sentence saying what and why."""

    rule: str
    source: str
    severity: str
    detail: str
    observed: float | None = None
    expected: float | None = None
    asset_id: int | None = None
