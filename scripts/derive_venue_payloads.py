"""Re-shape recorded prices into the CoinCap, Binance, Kraken and CryptoCompare payloads the fake upstream serves.

One-off, run by hand: `python scripts/derive_venue_payloads.py <shared data dir> data/upstream`. The fake
never runs it; it reads only the files this writes. data/README.md says what each value is and is not.
"""
from __future__ import annotations

import csv
import json
import sys
from decimal import Decimal
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

DAY = 86_400
# Daily windows per venue and coin (inclusive ISO dates). Binance's BTC runs past its 1000-kline page cap
# and Kraken's BTC past its 720-entry window on purpose; the ETH ones stay short to keep the files small.
WINDOWS = {("binance", "BTC"): ("2018-07-07", "2021-07-06"), ("binance", "ETH"): ("2021-01-01", "2021-07-06"),
           ("kraken", "BTC"): ("2019-07-01", "2021-07-06"), ("kraken", "ETH"): ("2021-01-01", "2021-07-06"),
           ("cryptocompare", "BTC"): ("2021-01-01", "2021-07-06"),
           ("cryptocompare", "ETH"): ("2021-01-01", "2021-07-06")}
COINS = {"BTC": "coin_Bitcoin.csv", "ETH": "coin_Ethereum.csv"}
BINANCE_SYMBOLS = {"BTC": "BTCUSDT", "ETH": "ETHUSDT"}
KRAKEN_PAIRS = {"BTC": "XXBTZUSD", "ETH": "XETHZUSD"}


def day_rows(source: Path, window: tuple[str, str]) -> list[dict[str, Any]]:
    """Return the Kaggle rows inside `window`, oldest first, with `t` the day's 00:00 UTC in seconds."""
    with source.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if window[0] <= r["Date"][:10] <= window[1]]
    for row in rows:
        day = datetime.strptime(row["Date"][:10], "%Y-%m-%d").replace(tzinfo=timezone.utc)
        row["t"] = int(day.timestamp())
    return sorted(rows, key=lambda r: r["t"])


def base_volume(row: dict[str, Any]) -> float:
    """Return the USD volume over the close: the source has no base-asset volume."""
    return float(row["Volume"]) / float(row["Close"])


def binance_kline(row: dict[str, Any]) -> list[Any]:
    """Shape one day as a Binance spot kline (8-decimal strings; what was not recorded is 0)."""
    def fixed(value: float | str) -> str:
        return f"{Decimal(str(value)):.8f}"  # Decimal, so the recorded text keeps its exact digits
    opened = row["t"] * 1000
    return [opened, fixed(row["Open"]), fixed(row["High"]), fixed(row["Low"]), fixed(row["Close"]),
            fixed(base_volume(row)), opened + DAY * 1000 - 1, fixed(row["Volume"]), 0, fixed(0), fixed(0), "0"]


def kraken_entry(row: dict[str, Any]) -> list[Any]:
    """Shape one day as a Kraken OHLC entry; vwap is the typical price (h+l+c)/3, count is 0 (not recorded)."""
    typical = (float(row["High"]) + float(row["Low"]) + float(row["Close"])) / 3
    return [row["t"], row["Open"], row["High"], row["Low"], row["Close"], f"{typical:.8f}",
            f"{base_volume(row):.8f}", 0]


def cryptocompare_point(row: dict[str, Any]) -> dict[str, Any]:
    """Shape one day as a CryptoCompare histoday point."""
    return {"time": row["t"], "high": float(row["High"]), "low": float(row["Low"]), "open": float(row["Open"]),
            "volumefrom": round(base_volume(row), 2), "volumeto": float(row["Volume"]),
            "close": float(row["Close"]), "conversionType": "direct", "conversionSymbol": ""}


def coincap_asset(coin: dict[str, Any]) -> dict[str, Any]:
    """Shape one CoinGecko markets object as a CoinCap v2 asset: numbers as strings, unrecorded ones null."""
    def text(value: Any) -> str | None:
        return None if value is None else repr(float(value))
    return {"id": coin["id"], "rank": str(coin["market_cap_rank"]), "symbol": coin["symbol"].upper(),
            "name": coin["name"], "supply": text(coin["circulating_supply"]), "maxSupply": text(coin["max_supply"]),
            "marketCapUsd": text(coin["market_cap"]), "volumeUsd24Hr": text(coin["total_volume"]),
            "priceUsd": text(coin["current_price"]), "changePercent24Hr": text(coin["price_change_percentage_24h"]),
            "vwap24Hr": None, "explorer": None}


def write(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, separators=(",", ":")) + "\n")


def main(shared: Path, out: Path) -> None:
    kaggle = shared / "historical" / "kaggle_coin_csv_2013-2021"
    for coin, name in COINS.items():
        write(out / "binance" / "klines" / f"{BINANCE_SYMBOLS[coin]}_1d.json",
              [binance_kline(r) for r in day_rows(kaggle / name, WINDOWS["binance", coin])])
        write(out / "kraken" / "OHLC" / f"{KRAKEN_PAIRS[coin]}_1440.json",
              [kraken_entry(r) for r in day_rows(kaggle / name, WINDOWS["kraken", coin])])
        write(out / "cryptocompare" / "histoday" / f"{coin}-USD.json",
              [cryptocompare_point(r) for r in day_rows(kaggle / name, WINDOWS["cryptocompare", coin])])
    page = json.loads((shared / "coingecko" / "markets_pages" / "traderbob_markets_top250_2025-02-09.json").read_text())
    newest = max(c["last_updated"] for c in page)
    stamp = int(datetime.strptime(newest, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp() * 1000)
    assets = [coincap_asset(c) for c in sorted(page, key=lambda c: c["market_cap_rank"])]
    write(out / "coincap" / "assets.json", {"data": assets, "timestamp": stamp})


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
