"""CoinPaprika and CoinGecko through the whole pipeline: a real worker against the fake upstream server."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from flask import Flask
from sqlalchemy import func, select

from kasparro.db import db
from kasparro.fake_upstream.server import FakeUpstream
from kasparro.models import Asset, AssetAlias, Checkpoint, MarketQuote, RawRecord, RejectedRecord, SourceRun
from kasparro.tasks import enqueue_run
from tests.conftest import BROKER_URL, PROVIDER_KEYS, RATE_LIMIT_PREFIX, ROOT, wait_for_run
from tests.pipeline.helpers import HEADER, csv_spec, declare, quote_count, run_now
from tests.slots import granted_slots

pytestmark = pytest.mark.usefixtures("worker")


def gecko(upstream: FakeUpstream, **settings: object) -> dict[str, object]:
    return {"kind": "coingecko", "base_url": upstream.coingecko_url, "api_key_env": "COINGECKO_API_KEY",
            "plan": "demo", "per_page": 50, "max_pages": 4, "requests_per_minute": 600, "backoff_seconds": 0.1,
            **settings}


def paprika(upstream: FakeUpstream, **settings: object) -> dict[str, object]:
    return {"kind": "coinpaprika", "base_url": upstream.coinpaprika_url, "api_key_env": "COINPAPRIKA_API_KEY",
            "requests_per_minute": 600, "backoff_seconds": 0.1, **settings}


def test_coingecko_pages_until_a_short_page_and_loads_every_coin(app: Flask, sources_file: Path,
                                                                 upstream: FakeUpstream) -> None:
    declare(sources_file, {"coingecko": gecko(upstream)})

    run = run_now(app)

    assert run.status == "success"
    (source_run,) = run.source_runs
    assert (source_run.extracted, source_run.inserted, source_run.requests) == (100, 100, 3)
    # Progress counts pages of max_pages (4) while reading; the short third page ended the listing.
    assert (source_run.progress_unit, source_run.progress_done, source_run.progress_total) == ("pages", 3, 3)
    pages = [r["query"].get("page") for r in upstream.requests if r["path"].endswith("/coins/markets")]
    assert pages == [["1"], ["2"], ["3"]] or pages == ["1", "2", "3"]
    assert all(r["auth_ok"] for r in upstream.requests)


def test_a_second_run_over_unchanged_upstream_data_inserts_nothing(app: Flask, sources_file: Path,
                                                                   upstream: FakeUpstream) -> None:
    declare(sources_file, {"coinpaprika": paprika(upstream)})
    first = run_now(app)

    second = run_now(app)

    assert first.source_runs[0].inserted == 300
    assert (first.source_runs[0].progress_unit, first.source_runs[0].progress_done,
            first.source_runs[0].progress_total) == ("records", 300, 300)
    assert (second.source_runs[0].extracted, second.source_runs[0].inserted) == (0, 0)
    assert quote_count(app) == 300


def test_after_upstream_moves_on_only_the_changed_coins_load(app: Flask, sources_file: Path,
                                                            upstream: FakeUpstream) -> None:
    declare(sources_file, {"coinpaprika": paprika(upstream)})
    run_now(app)
    upstream.advance("coinpaprika")

    run = run_now(app)

    (source_run,) = run.source_runs
    assert source_run.inserted == 300  # every coin has a new last_updated: a new observation each
    assert quote_count(app) == 600
    with app.app_context():
        checkpoint = db.session.get(Checkpoint, "coinpaprika")
        assert checkpoint.run_id == run.id
        assert checkpoint.cursor["seen"]["btc-bitcoin"].startswith("2023-08-11T08:14")


def test_a_429_is_waited_out_as_retry_after_says_and_recorded(app: Flask, sources_file: Path,
                                                            upstream: FakeUpstream) -> None:
    declare(sources_file, {"coinpaprika": paprika(upstream)})
    upstream.inject("coinpaprika", "429", times=1, retry_after=1)

    run = run_now(app)

    (source_run,) = run.source_runs
    assert run.status == "success"
    assert (source_run.requests, source_run.throttled, source_run.inserted) == (2, 1, 300)
    # The law is the upstream's: its next request came no sooner than Retry-After after the 429's request.
    first, second = [r["monotonic"] for r in upstream.requests if r["provider"] == "coinpaprika"][:2]
    assert second - first >= 1.0
    # The recorded wait starts once the 429 is read, a moment after the upstream stamped it.
    assert float(source_run.wait_seconds) >= 0.9
    assert source_run.waits >= 1 and 0.9 <= float(source_run.longest_wait_seconds) <= float(source_run.wait_seconds)


def test_a_source_that_keeps_failing_gives_up_and_the_others_still_load(
        app: Flask, sources_file: Path, upstream: FakeUpstream) -> None:
    declare(sources_file, {"coinpaprika": paprika(upstream, max_retries=2),
                           "daily": csv_spec(ROOT / "data" / "csv" / "coins_daily_2019.csv")})
    upstream.inject("coinpaprika", "500", times=50)

    run = run_now(app, timeout=120)

    by_source = {s.source: s for s in run.source_runs}
    assert run.status == "partial"
    assert by_source["coinpaprika"].status == "failed"
    assert "500" in by_source["coinpaprika"].error
    assert by_source["coinpaprika"].retries >= 2
    assert by_source["daily"].inserted == 295


def test_truncated_json_fails_the_source_with_a_reason_and_writes_nothing(
        app: Flask, sources_file: Path, upstream: FakeUpstream) -> None:
    declare(sources_file, {"coinpaprika": paprika(upstream)})
    upstream.inject("coinpaprika", "truncated", times=1)

    run = run_now(app)

    (source_run,) = run.source_runs
    assert (run.status, source_run.status) == ("failed", "failed")
    assert "JSON" in source_run.error or "json" in source_run.error
    with app.app_context():
        assert db.session.execute(select(func.count()).select_from(RawRecord)).scalar_one() == 0
        assert db.session.get(Checkpoint, "coinpaprika") is None


def test_a_renamed_field_rejects_each_record_with_the_missing_field_named(
        app: Flask, sources_file: Path, upstream: FakeUpstream) -> None:
    declare(sources_file, {"coingecko": gecko(upstream, max_pages=1)})
    upstream.inject("coingecko", "rename_field", times=1, field="current_price", to="price")

    run = run_now(app)

    (source_run,) = run.source_runs
    assert (run.status, source_run.rejected, source_run.inserted) == ("partial", 50, 0)
    with app.app_context():
        reason = db.session.execute(select(RejectedRecord.reason).limit(1)).scalar_one()
    assert "current_price" in str(reason)


def test_a_key_sent_the_wrong_way_fails_the_source_without_leaking_it(
        app: Flask, sources_file: Path, upstream: FakeUpstream) -> None:
    # The pro header sent to the demo host, as a misconfigured plan would.
    declare(sources_file, {"coingecko": gecko(upstream, plan="pro")})

    run = run_now(app)

    (source_run,) = run.source_runs
    assert source_run.status == "failed"
    assert PROVIDER_KEYS["COINGECKO_API_KEY"] not in source_run.error
    assert not any(r["auth_ok"] for r in upstream.requests)


def test_the_same_coin_from_three_sources_is_one_asset(app: Flask, sources_file: Path,
                                                       upstream: FakeUpstream) -> None:
    declare(sources_file, {"coinpaprika": paprika(upstream), "coingecko": gecko(upstream),
                           "daily": csv_spec(ROOT / "data" / "csv" / "coins_daily_2019.csv")})

    run_now(app)

    with app.app_context():
        bitcoin = db.session.execute(select(Asset).where(Asset.slug == "bitcoin")).scalar_one()
        aliases = {a.source: (a.source_asset_id, a.match_method) for a in bitcoin.aliases}
        sources = set(db.session.execute(
            select(MarketQuote.source).where(MarketQuote.asset_id == bitcoin.id).distinct()).scalars())
        bnb = {a.source: a.source_asset_id for a in db.session.execute(
            select(AssetAlias).join(Asset).where(Asset.slug == "binancecoin")).scalars()}
    assert aliases == {"coinpaprika": ("btc-bitcoin", "source_id"), "coingecko": ("bitcoin", "source_id"),
                       "daily": ("bitcoin", "new")}
    assert sources == {"coinpaprika", "coingecko", "daily"}
    assert bnb == {"coinpaprika": "bnb-binance-coin", "coingecko": "binancecoin", "daily": "binance-coin"}


def test_two_sources_sharing_a_budget_stay_within_it_together(app: Flask, sources_file: Path,
                                                               upstream: FakeUpstream) -> None:
    # The test worker's budget window is 1 s, and a window's share of requests_per_minute=2 rounds up to
    # the least a budget grants: 1 request a second, shared by both listings; each needs 3 requests.
    shared = {"rate_limit_group": "gecko-account", "requests_per_minute": 2}
    declare(sources_file, {"gecko_a": gecko(upstream, **shared), "gecko_b": gecko(upstream, **shared)})
    started = time.monotonic()

    with granted_slots(redis.Redis.from_url(BROKER_URL), f"{RATE_LIMIT_PREFIX}:{{gecko-account}}:slots") as slots:
        run = run_now(app)

    assert run.status == "success"
    # The slots the shared budget granted, by Redis's clock: never 2 in one window, however late each
    # request then went out (a loaded machine delays requests, never their slots).
    granted = sorted(slots.values())
    assert len(granted) == 6
    assert all(later - earlier >= 1000 for earlier, later in zip(granted, granted[1:])), granted
    # And at the upstream: request n came n - 1 windows after the run began at the soonest (lower bounds
    # only, which lateness cannot break).
    times = sorted(r["monotonic"] for r in upstream.requests if r["path"].endswith("/coins/markets"))
    assert len(times) == 6 and all(at - started >= n for n, at in enumerate(times)), times
    assert sum(float(s.wait_seconds) for s in run.source_runs) >= 1.0


def test_a_dead_upstream_holds_back_only_its_own_source(app: Flask, sources_file: Path, upstream: FakeUpstream,
                                                        tmp_path: Path) -> None:
    daily = tmp_path / "daily.csv"
    daily.write_text(HEADER + "bitcoin,2019-04-01,5000.5,1000,2000\n")
    # Retrying a 503 for a minute or more: the upstream is down as far as this test can tell.
    declare(sources_file, {"gecko": gecko(upstream, max_retries=10, backoff_seconds=0.5), "daily": csv_spec(daily)})
    upstream.inject("coingecko", "503", times=1_000_000)
    with app.app_context():
        stuck = enqueue_run("schedule")
        stuck_id = stuck.run.id
    wait_until(lambda: _status(app, stuck_id, "daily") == "success")
    with daily.open("a") as handle:
        handle.write("bitcoin,2019-04-02,5100.5,1000,2000\n")

    with app.app_context():
        tick = enqueue_run("schedule")
        tick_id = (tick.run.id, tick.created, tick.run.sources, tick.busy)
    fresh = wait_for_run(app, tick_id[0])
    still_stuck = _status(app, stuck_id, "gecko")
    upstream.clear_faults()
    wait_for_run(app, stuck_id, timeout=120)

    assert tick_id[1:] == (True, ["daily"], {"gecko": stuck_id})
    assert fresh.status == "success" and fresh.source_runs[0].inserted == 1
    assert still_stuck == "running"
    assert quote_count(app, "daily") == 2


def _status(app: Flask, run_id: int, source: str) -> str:
    with app.app_context():
        return db.session.execute(select(SourceRun.status).where(SourceRun.run_id == run_id,
                                                                 SourceRun.source == source)).scalar_one()


def wait_until(predicate, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)
