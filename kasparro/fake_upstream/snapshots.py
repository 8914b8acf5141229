"""Recorded upstream snapshots and the deterministic derivation of later CoinPaprika ones."""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

COINPAPRIKA_DERIVED = 4
COINPAPRIKA_STEP = timedelta(minutes=5)
# Relative price change per derived step; small enough to stay plausible.
PRICE_NUDGE = 0.001


@dataclass
class Snapshot:
    """One payload a provider serves while it is the current snapshot."""

    id: str
    records: list[dict[str, Any]]
    derived: bool = False

    def last_updated_range(self) -> tuple[str | None, str | None]:
        """Return the earliest and latest `last_updated` in the snapshot."""
        values = sorted(str(r["last_updated"]) for r in self.records if r.get("last_updated"))
        return (values[0], values[-1]) if values else (None, None)


@dataclass
class SnapshotSeries:
    """Hold a provider's ordered snapshots and which one is current."""

    provider: str
    snapshots: list[Snapshot]
    index: int = 0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def current(self) -> Snapshot:
        """Return the snapshot being served now."""
        return self.snapshots[self.index]

    def advance(self) -> None:
        """Move to the next snapshot, staying on the last one at the end."""
        self.index = min(self.index + 1, len(self.snapshots) - 1)

    def describe(self) -> dict[str, Any]:
        """Return a JSON-ready summary for the admin state endpoint."""
        lo, hi = self.current.last_updated_range()
        return {
            "index": self.index,
            "count": len(self.snapshots),
            "snapshot_id": self.current.id,
            "derived": self.current.derived,
            "records": len(self.current.records),
            "last_updated_min": lo,
            "last_updated_max": hi,
            "snapshot_ids": [s.id for s in self.snapshots],
        }


def _load_array(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, list):
        raise ValueError(f"{path} does not hold a JSON array")
    return data


def _shift_timestamp(value: str, delta: timedelta) -> str:
    # CoinPaprika timestamps look like 2023-08-11T08:09:32Z; keep that exact form.
    parsed = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    return (parsed + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def derive_coinpaprika(base: list[dict[str, Any]], step: int) -> list[dict[str, Any]]:
    """Derive snapshot `step` from `base`: shift timestamps and nudge a third of the prices."""
    records = copy.deepcopy(base)
    for coin in records:
        if coin.get("last_updated"):
            coin["last_updated"] = _shift_timestamp(coin["last_updated"], COINPAPRIKA_STEP * step)
        rank = int(coin.get("rank") or 0)
        usd = (coin.get("quotes") or {}).get("USD")
        # Every third rank moves: even ranks up, odd ranks down, so both directions occur.
        if rank % 3 == 0 and usd and isinstance(usd.get("price"), (int, float)):
            sign = 1 if rank % 2 == 0 else -1
            usd["price"] = usd["price"] * (1 + sign * PRICE_NUDGE * step)
    return records


def load_coingecko(data_dir: Path) -> SnapshotSeries:
    """Load the recorded `/coins/markets` captures in time (file name) order."""
    files = sorted((data_dir / "coingecko" / "markets").glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no CoinGecko captures under {data_dir / 'coingecko' / 'markets'}")
    charts = {p.stem: json.loads(p.read_text()) for p in sorted((data_dir / "coingecko" / "market_chart").glob("*.json"))}
    return SnapshotSeries("coingecko", [Snapshot(p.stem, _load_array(p)) for p in files],
                          extras={"market_chart": charts})


def load_coinpaprika(data_dir: Path, derived: int = COINPAPRIKA_DERIVED) -> SnapshotSeries:
    """Load the recorded `/tickers` files and append snapshots derived from the last one."""
    files = sorted((data_dir / "coinpaprika" / "tickers").glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no CoinPaprika tickers under {data_dir / 'coinpaprika' / 'tickers'}")
    snapshots = [Snapshot(p.stem, _load_array(p)) for p in files]
    base = snapshots[-1]
    for step in range(1, derived + 1):
        minutes = int(COINPAPRIKA_STEP.total_seconds() // 60) * step
        snapshots.append(
            Snapshot(f"{base.id}+{minutes}m", derive_coinpaprika(base.records, step), derived=True)
        )
    coins_path = data_dir / "coinpaprika" / "coins.json"
    extras = {"coins": _load_array(coins_path)} if coins_path.exists() else {}
    return SnapshotSeries("coinpaprika", snapshots, extras=extras)
