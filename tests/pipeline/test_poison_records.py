"""Poison records through the whole pipeline: one record PostgreSQL cannot store, or nested past `max_depth`,
is one reject with its position and reason; the records around it load, and the next run does not fail on it.

A real worker and the migrated database; the API sources read a recorded listing with some coins poisoned,
served by a small local server.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from sqlalchemy import func, select

from kasparro.db import db
from kasparro.fake_upstream.server import FakeUpstream
from kasparro.models import RawRecord, RejectedRecord
from tests.conftest import PROVIDER_KEYS
from tests.pipeline.helpers import declare, quote_count, run_now
from tests.pipeline.test_api_sources import gecko, paprika
from tests.pipeline.test_json_pipeline import drop_spec, tick

pytestmark = pytest.mark.usefixtures("worker")

DEEP = 5_000


def rejects(app: Flask, source: str) -> list[tuple[str, str]]:
    """Each reject of `source` as (position, reason text), in the order the records were received."""
    with app.app_context():
        rows = db.session.execute(select(RawRecord.position, RejectedRecord.reason)
                                  .join(RejectedRecord, RejectedRecord.raw_record_id == RawRecord.id)
                                  .where(RawRecord.source == source).order_by(RawRecord.id)).all()
    return [(position, json.dumps(reason)) for position, reason in rows]


def raw_count(app: Flask, source: str) -> int:
    with app.app_context():
        return db.session.execute(select(func.count()).select_from(RawRecord)
                                  .where(RawRecord.source == source)).scalar_one()


def test_an_ndjson_drop_with_poisoned_lines_loads_every_good_line_once_and_rejects_each_bad_one(
        app: Flask, sources_file: Path, tmp_path: Path) -> None:
    good = [tick(coin, 1, 100.5 + n) for n, coin in enumerate(("bitcoin", "ethereum", "tether", "ripple"))]
    lines = [
        json.dumps(good[0]),
        json.dumps({**tick("cardano", 1, 0.5), "note": "\ud83d"}),                     # 2: lone surrogate, value
        json.dumps(good[1]),
        json.dumps({**tick("solana", 1, 20.5), "\udc00": 1}),                          # 4: lone surrogate, key
        json.dumps(tick("dogecoin", 1, 0.1))[:-1] + ', "x": ' + "[" * DEEP + "]" * DEEP + "}",  # 5: 5,000 deep
        json.dumps({**good[2], "note": "\\ud83d"}),                                      # 6: the text \ud83d: loads
        json.dumps(tick("litecoin", 1, 50.5))[:-1] + ', "cap": 1e400}',                   # 7: out of float range
        json.dumps(good[3]),
    ]
    path = tmp_path / "poisoned.ndjson"
    path.write_text("".join(line + "\n" for line in lines))
    declare(sources_file, {"ticks": drop_spec(path)})

    first = run_now(app)
    second = run_now(app)

    (source_run,) = first.source_runs
    assert (first.status, source_run.extracted, source_run.inserted, source_run.rejected) == ("partial", 8, 4, 4)
    assert quote_count(app, "ticks") == 4
    found = rejects(app, "ticks")
    assert [position for position, _ in found] == [f"poisoned.ndjson:{n}" for n in (2, 4, 5, 7)]
    reasons = [reason for _, reason in found]
    assert "poisoned.ndjson:2 holds a lone UTF-16 surrogate" in reasons[0]
    assert "poisoned.ndjson:4 holds a lone UTF-16 surrogate" in reasons[1]
    assert "line 5" in reasons[2] and "nests deeper than max_depth 64" in reasons[2]
    assert "number out of range" in reasons[3]
    (again,) = second.source_runs
    assert (second.status, again.extracted, again.inserted, again.rejected) == ("success", 0, 0, 0)
    assert quote_count(app, "ticks") == 4 and len(rejects(app, "ticks")) == 4


def test_max_depth_is_a_per_source_setting_named_in_the_reject(app: Flask, sources_file: Path,
                                                                tmp_path: Path) -> None:
    path = tmp_path / "nested.ndjson"
    path.write_text(json.dumps({**tick("bitcoin", 1, 1.5), "x": json.loads("[" * 100 + "]" * 100)}) + "\n")
    declare(sources_file, {"strict": drop_spec(path), "roomy": drop_spec(path, max_depth=128)})

    run = run_now(app)

    outcome = {s.source: (s.status, s.inserted, s.rejected) for s in run.source_runs}
    assert outcome == {"strict": ("partial", 0, 1), "roomy": ("success", 1, 0)}
    ((position, reason),) = rejects(app, "strict")
    assert position == "nested.ndjson:1" and "nests deeper than max_depth 64" in reason


def test_an_array_drop_with_poisoned_elements_loads_the_elements_around_them(
        app: Flask, sources_file: Path, tmp_path: Path) -> None:
    elements = [json.dumps(tick("bitcoin", 1, 1.5)), json.dumps({**tick("ethereum", 1, 2.5), "n": "\udc00"}),
                json.dumps(tick("tether", 1, 1.0)), "[" * DEEP + "]" * DEEP, json.dumps(tick("ripple", 1, 0.5))]
    path = tmp_path / "poisoned.json"
    path.write_text("[" + ",".join(elements) + "]")
    declare(sources_file, {"drop": drop_spec(path)})

    first = run_now(app)
    second = run_now(app)

    assert (first.status, first.source_runs[0].inserted, first.source_runs[0].rejected) == ("partial", 3, 2)
    found = rejects(app, "drop")
    assert [position for position, _ in found] == ["poisoned.json:[1]", "poisoned.json:[3]"]
    assert "lone UTF-16 surrogate" in found[0][1] and "nests deeper than max_depth 64" in found[1][1]
    assert second.status == "success" and quote_count(app, "drop") == 3


# --- API sources: a recorded listing with poisoned coins, served locally --------------------------------------

class _Body:
    """The one body the local server answers every GET with."""

    data = b"[]"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - name fixed by http.server
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(_Body.data)))
        self.end_headers()
        self.wfile.write(_Body.data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def poisoned() -> Iterator[str]:
    """A local server answering every GET with `_Body.data`; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def recorded(url: str, header: str, key: str, **params: Any) -> list[dict[str, Any]]:
    response = requests.get(url, params=params, headers={header: PROVIDER_KEYS[key]}, timeout=10)
    response.raise_for_status()
    return response.json()


def test_an_api_listing_with_poisoned_coins_loads_the_other_coins_and_rejects_each_poisoned_one(
        app: Flask, sources_file: Path, upstream: FakeUpstream, poisoned: str) -> None:
    coins = recorded(f"{upstream.coinpaprika_url}/tickers", "Authorization", "COINPAPRIKA_API_KEY", quotes="USD")
    coins[5]["name"] = coins[5]["name"] + "\ud83d"
    coins[9]["\udc00"] = 1
    coins[12]["quotes"]["USD"]["nested"] = json.loads("[" * 100 + "]" * 100)
    coins[15]["id"] = coins[15]["id"] + "\x00"  # kept (NUL becomes U+FFFD), but never in the JSONB cursor
    coins[20]["name"] = "<byte>"
    # ensure_ascii: the lone surrogates go out as escapes (\ud83d), as a provider's JSON encoder sends them.
    _Body.data = json.dumps(coins).encode().replace(b"<byte>", b"bad \xff byte")
    declare(sources_file, {"coinpaprika": paprika(upstream, base_url=poisoned)})

    first = run_now(app)
    second = run_now(app)

    (source_run,) = first.source_runs
    assert (first.status, source_run.inserted, source_run.rejected) == ("partial", len(coins) - 4, 4)
    found = rejects(app, "coinpaprika")
    assert [position for position, _ in found] == ["tickers#5", "tickers#9", "tickers#12", "tickers#20"]
    assert "lone UTF-16 surrogate" in found[0][1] and "lone UTF-16 surrogate" in found[1][1]
    assert "nests deeper than max_depth 64" in found[2][1]
    assert "a byte 0xff that is not UTF-8" in found[3][1]
    # The poisoned coins are fetched again (they never reached the watermarks) and are known: no new row.
    (again,) = second.source_runs
    assert second.status == "success" and (again.inserted, again.rejected) == (0, 0)
    assert len(rejects(app, "coinpaprika")) == 4 and raw_count(app, "coinpaprika") == len(coins)


def test_an_api_page_with_a_coin_too_deep_for_python_is_read_coin_by_coin(
        app: Flask, sources_file: Path, upstream: FakeUpstream, poisoned: str) -> None:
    coins = recorded(f"{upstream.coingecko_url}/coins/markets", "x-cg-demo-api-key", "COINGECKO_API_KEY",
                     vs_currency="usd", per_page=50, page=1)
    coins[3]["name"] = "\udc00"
    body = json.dumps(coins).encode()
    deep = b'"x_deep": ' + b"[" * DEEP + b"]" * DEEP + b","
    # Coin 7 nests 5,000 deep: json.loads gives up on the page, which is read coin by coin instead.
    start = body.index(b'"id": "%s"' % coins[7]["id"].encode())
    _Body.data = body[:start] + deep + body[start:]
    declare(sources_file, {"coingecko": gecko(upstream, base_url=poisoned, max_pages=1)})

    first = run_now(app)
    second = run_now(app)

    (source_run,) = first.source_runs
    assert (first.status, source_run.inserted, source_run.rejected) == ("partial", len(coins) - 2, 2)
    found = rejects(app, "coingecko")
    assert [position for position, _ in found] == ["markets?page=1#3", "markets?page=1#7"]
    assert "lone UTF-16 surrogate" in found[0][1] and "nests deeper than max_depth 64" in found[1][1]
    assert second.status == "success" and len(rejects(app, "coingecko")) == 2
