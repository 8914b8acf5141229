"""Command line entry point: `python -m kasparro.fake_upstream`."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from types import FrameType

from kasparro.config import read_environment
from kasparro.logformat import configure, wants_json

from .admin import ADMIN_TOKEN_ENV
from .server import FakeUpstream


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m kasparro.fake_upstream",
                                     description="Serve recorded CoinPaprika/CoinGecko/CoinCap/Binance/Kraken/"
                                                 "CryptoCompare payloads and news feeds "
                                                 "(demos and tests only). /__admin/* needs 'Authorization: "
                                                 f"Bearer ${ADMIN_TOKEN_ENV}'; unset, admin is locked.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--data-dir", default=None,
                        help="payload directory (default: data/upstream)")
    parser.add_argument("--advance-every", type=float, default=None, metavar="SECONDS",
                        help="advance every provider to its next snapshot on this period")
    parser.add_argument("--coinpaprika-key", default=None,
                        help="require 'Authorization: <key>' on CoinPaprika routes")
    parser.add_argument("--coingecko-key", default=None,
                        help="require this key on CoinGecko routes")
    parser.add_argument("--coingecko-plan", choices=("demo", "pro"), default="demo")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the server until Ctrl-C or SIGTERM."""
    args = parse_args(argv)
    # LOG_FORMAT as every other process of `make run` reads it (.env under the environment).
    configure("json" if wants_json(read_environment()) else "console", logging.INFO)
    upstream = FakeUpstream(args.data_dir, coinpaprika_key=args.coinpaprika_key,
                            coingecko_key=args.coingecko_key, coingecko_plan=args.coingecko_plan,
                            advance_every=args.advance_every,
                            admin_token=os.environ.get(ADMIN_TOKEN_ENV, "").strip() or None)
    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    upstream.start(args.host, args.port)
    log = logging.getLogger("kasparro.fake_upstream")
    # Report whether auth is on, never the key values themselves.
    log.info("serving %s (data %s); coinpaprika auth=%s, coingecko auth=%s plan=%s",
             upstream.base_url, upstream.data_dir, bool(args.coinpaprika_key),
             bool(args.coingecko_key), args.coingecko_plan)
    if not os.environ.get(ADMIN_TOKEN_ENV, "").strip():
        log.info("admin endpoints locked: set %s to inject faults or advance over HTTP", ADMIN_TOKEN_ENV)
    log.info("CoinPaprika base URL %s", upstream.coinpaprika_url)
    log.info("CoinGecko base URL %s", upstream.coingecko_url)
    for venue in upstream.venues:
        log.info("%s base URL %s", venue, upstream.url(venue))
    log.info("News feeds %s", ", ".join(upstream.rss_url(name) for name in upstream.feeds.names()))
    # Wait in short slices so the signal handler runs promptly on every platform.
    while not done.wait(0.5):
        pass
    upstream.stop()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
