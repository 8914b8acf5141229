"""The CoinGecko source against the fake upstream: paging, plan headers, incremental cursors, mapping."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from kasparro.errors import SourceAuthError, SourceConfigError
from kasparro.fake_upstream import FakeUpstream
from kasparro.pipeline.validation import quote_schema
from kasparro.sources import SourceContext, build_source
from kasparro.sources.base import Page
from kasparro.sources.coingecko import CoinGeckoSource, plan_for

from .conftest import DATA_DIR, FAST_RPM, GECKO_CHANGED, upstream_log

ContextFactory = Callable[..., SourceContext]


def gecko(fake: FakeUpstream, context: SourceContext, **settings: object) -> CoinGeckoSource:
    spec = {"kind": "coingecko", "base_url": fake.coingecko_url, "per_page": 50,
            "requests_per_minute": FAST_RPM, **settings}
    source = build_source("gecko", spec, context)
    assert isinstance(source, CoinGeckoSource)
    return source


def ids(pages: list[Page]) -> list[str]:
    return [item.payload["id"] for page in pages for item in page.items]


def requested_pages(fake: FakeUpstream) -> list[str]:
    return [entry["query"]["page"] for entry in upstream_log(fake, "coingecko")]


def test_pages_until_a_short_page(upstream: FakeUpstream, make_context: ContextFactory) -> None:
    context = make_context()
    pages = list(gecko(upstream, context).pages(None, 1000))
    assert [len(p.items) for p in pages] == [50, 50]
    assert len(set(ids(pages))) == 100
    # Page 2 was full, so page 3 is asked for; it is empty and ends the extract.
    assert requested_pages(upstream) == ["1", "2", "3"]
    assert all(e["query"]["per_page"] == "50" and e["query"]["vs_currency"] == "usd"
               for e in upstream_log(upstream, "coingecko"))
    assert context.stats.requests == 3
    assert pages[1].items[4].position == "markets?page=2#4"
    assert pages[0].items[0].payload == json.loads(
        sorted((DATA_DIR / "coingecko" / "markets").glob("*.json"))[0].read_text())[0]


def test_max_pages_and_page_size_bound_the_extract(upstream: FakeUpstream, make_context: ContextFactory) -> None:
    pages = list(gecko(upstream, make_context(), max_pages=1).pages(None, 20))
    assert [len(p.items) for p in pages] == [20, 20, 10]
    assert requested_pages(upstream) == ["1"]
    # Every page is of page 1 of max_pages 1, the last too (it ended the listing).
    assert {(p.progress.done, p.progress.total, p.progress.unit) for p in pages} == {(1, 1, "pages")}


def test_progress_counts_pages_of_max_pages_until_the_listing_ends(upstream: FakeUpstream,
                                                                   make_context: ContextFactory) -> None:
    pages = list(gecko(upstream, make_context()).pages(None, 25))

    assert [(p.progress.done, p.progress.total) for p in pages] == [(1, 4), (1, 4), (2, 4), (3, 3)]


@pytest.mark.parametrize("settings", [{"per_page": 251}, {"per_page": 0}, {"max_pages": "2"},
                                      {"plan": "enterprise"}])
def test_bad_settings_are_refused(upstream: FakeUpstream, make_context: ContextFactory, settings: dict) -> None:
    with pytest.raises(SourceConfigError):
        gecko(upstream, make_context(), **settings)


def test_plan_follows_the_host() -> None:
    assert plan_for("https://api.coingecko.com/api/v3", None) == "demo"
    assert plan_for("https://pro-api.coingecko.com/api/v3", None) == "pro"
    assert plan_for("http://127.0.0.1:8900/coingecko/api/v3", "pro") == "pro"
    with pytest.raises(ValueError, match="a demo key must be sent to api.coingecko.com"):
        plan_for("https://pro-api.coingecko.com/api/v3", "demo")


def test_demo_key_goes_in_the_demo_header(keyed_upstream: FakeUpstream, make_context: ContextFactory,
                                          api_key: str) -> None:
    source = gecko(keyed_upstream, make_context({"CG_KEY": api_key}), api_key_env="CG_KEY")
    assert len(ids(list(source.pages(None, 1000)))) == 100
    assert all(e["auth_ok"] for e in upstream_log(keyed_upstream, "coingecko"))


@pytest.mark.parametrize(("plan", "secret", "status"), [("pro", "right", 400), ("demo", "wrong", 401)])
def test_a_wrongly_sent_key_fails_without_showing_it(keyed_upstream: FakeUpstream, make_context: ContextFactory,
                                                     api_key: str, caplog: pytest.LogCaptureFixture,
                                                     plan: str, secret: str, status: int) -> None:
    caplog.set_level(logging.DEBUG)
    key = api_key if secret == "right" else api_key[::-1]
    source = gecko(keyed_upstream, make_context({"CG_KEY": key}), api_key_env="CG_KEY", plan=plan)
    with pytest.raises(SourceAuthError, match=f"HTTP {status}") as caught:
        list(source.pages(None, 1000))
    assert key not in str(caught.value) and key not in caplog.text
    assert len(upstream_log(keyed_upstream, "coingecko")) == 1


def test_a_declared_but_unset_secret_is_named_and_the_call_goes_without(
        keyed_upstream: FakeUpstream, make_context: ContextFactory, caplog: pytest.LogCaptureFixture) -> None:
    source = gecko(keyed_upstream, make_context({}), api_key_env="CG_KEY")
    assert "secret CG_KEY (api_key_env) is not set" in caplog.text
    with pytest.raises(SourceAuthError, match="HTTP 401.*API Key Missing"):
        list(source.pages(None, 1000))


def test_unchanged_listing_yields_nothing(upstream: FakeUpstream, make_context: ContextFactory) -> None:
    source = gecko(upstream, make_context())
    cursor = list(source.pages(None, 1000))[-1].cursor
    assert len(cursor["seen"]) == 100
    assert list(source.pages(cursor, 1000)) == []


def test_resumed_extract_skips_pages_already_stored(upstream: FakeUpstream, make_context: ContextFactory) -> None:
    source = gecko(upstream, make_context())
    first, second = list(source.pages(None, 1000))
    assert ids(list(source.pages(first.cursor, 1000))) == ids([second])


def test_only_updated_coins_are_yielded(changed_data_dir: Path, make_context: ContextFactory) -> None:
    with FakeUpstream(changed_data_dir) as fake:
        source = gecko(fake, make_context())
        cursor = list(source.pages(None, 1000))[-1].cursor
        fake.advance("coingecko")
        pages = list(source.pages(cursor, 1000))
    assert sorted(ids(pages)) == sorted(GECKO_CHANGED)
    assert pages[-1].cursor["seen"]["bitcoin"] == "2026-04-17T03:00:00.000Z"


def test_next_recorded_day_yields_every_updated_coin_and_prunes_the_cursor(
        upstream: FakeUpstream, make_context: ContextFactory) -> None:
    source = gecko(upstream, make_context())
    cursor = list(source.pages(None, 1000))[-1].cursor
    cursor["seen"]["delisted-coin"] = "2026-01-01T00:00:00.000Z"
    upstream.advance("coingecko")
    pages = list(source.pages(cursor, 1000))
    day1, day2 = ({c["id"]: c["last_updated"] for c in json.loads(path.read_text())}
                  for path in sorted((DATA_DIR / "coingecko" / "markets").glob("*.json"))[:2])
    updated = {coin for coin, stamp in day2.items() if coin not in day1 or stamp > day1[coin]}
    # The capture has a coin CoinGecko did not update that day (hashnote-usyc): it is skipped.
    assert set(ids(pages)) == updated and 0 < len(updated) < len(day2)
    assert "delisted-coin" not in pages[-1].cursor["seen"]
    assert "delisted-coin" in pages[0].cursor["seen"]  # only the last page's cursor prunes


def test_every_recorded_payload_maps_to_a_valid_quote(make_context: ContextFactory,
                                                      upstream: FakeUpstream) -> None:
    source = gecko(upstream, make_context())
    for path in sorted((DATA_DIR / "coingecko" / "markets").glob("*.json")):
        for payload in json.loads(path.read_text()):
            quote = quote_schema.load(source.to_unified(payload))
            assert quote["source_asset_id"] == payload["id"] and quote["symbol"] == payload["symbol"].upper()


def test_a_renamed_field_is_named_when_mapping(upstream: FakeUpstream, make_context: ContextFactory) -> None:
    upstream.inject("coingecko", "rename_field", field="current_price", to="price")
    source = gecko(upstream, make_context(), max_pages=1)
    payload = next(iter(source.pages(None, 1000))).items[0].payload
    with pytest.raises(KeyError, match="current_price"):
        source.to_unified(payload)


def test_chart_points_carry_the_change_from_the_point_a_day_before_and_start_at_the_window() -> None:
    from kasparro.sources.coingecko import DAY_MS, chart_points

    day0 = 1_769_904_000_000
    chart = {"prices": [[day0 - DAY_MS + 3_600_000, 100.0], [day0, 110.0], [day0 + DAY_MS, 99.0],
                        [day0 + 5 * DAY_MS, 50.0]],
             "market_caps": [[day0, 1e9]], "total_volumes": [[day0, 2e7]]}

    points = chart_points("bitcoin", chart, {"symbol": "btc", "name": "Bitcoin"}, since_ms=day0)

    assert [p["last_updated"] for p in points] == ["2026-02-01T00:00:00Z", "2026-02-02T00:00:00Z",
                                                   "2026-02-06T00:00:00Z"]
    assert [p["price_change_percentage_24h"] for p in points] == [10.0, -10.0, None]  # no point near day 4
    assert (points[0]["market_cap"], points[0]["total_volume"], points[1]["market_cap"]) == (1e9, 2e7, None)
    assert all(quote_schema.load(CoinGeckoSource.to_unified(None, p)) for p in points)  # type: ignore[arg-type]


def test_a_window_reads_each_coin_once_and_resumes_after_the_coins_done(upstream: FakeUpstream,
                                                                       make_context: ContextFactory) -> None:
    from datetime import datetime, timezone

    from kasparro.sources.window import Window

    source = gecko(upstream, make_context(), max_pages=1)
    window = Window(datetime(2026, 2, 1, tzinfo=timezone.utc), datetime(2026, 2, 10, tzinfo=timezone.utc),
                    ("bitcoin", "ethereum"))

    pages = list(source.window_pages(window, None, 5))
    resumed = list(source.window_pages(window, pages[1].cursor, 5))

    assert {p.payload["id"] for page in pages for p in page.items} == {"bitcoin", "ethereum"}
    assert pages[-1].cursor == {"backfilled": ["bitcoin", "ethereum"]}
    assert {p.payload["id"] for page in resumed for p in page.items} == {"ethereum"}
    with pytest.raises(SourceConfigError, match="coins not in the listing"):
        list(source.window_pages(Window(window.start, window.end, ("no-such-coin",)), None, 5))
