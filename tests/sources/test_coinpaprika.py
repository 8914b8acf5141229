"""The CoinPaprika source against the fake upstream: one-call listing, auth header, incremental cursors, mapping."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from marshmallow import ValidationError

from kasparro.errors import PayloadError, SourceAuthError
from kasparro.fake_upstream import FakeUpstream
from kasparro.pipeline.transform import validate_record
from kasparro.pipeline.validation import quote_schema
from kasparro.sources import SourceContext, build_source
from kasparro.sources.base import Page
from kasparro.sources.coinpaprika import CoinPaprikaSource

from .conftest import DATA_DIR, FAST_RPM, FIXTURES, PAPRIKA_CHANGED, upstream_log

ContextFactory = Callable[..., SourceContext]
TICKERS = DATA_DIR / "coinpaprika" / "tickers" / "2023-08-11.json"


def paprika(fake: FakeUpstream, context: SourceContext, **settings: object) -> CoinPaprikaSource:
    spec = {"kind": "coinpaprika", "base_url": fake.coinpaprika_url, "requests_per_minute": FAST_RPM, **settings}
    source = build_source("paprika", spec, context)
    assert isinstance(source, CoinPaprikaSource)
    return source


def ids(pages: list[Page]) -> list[str]:
    return [item.payload["id"] for page in pages for item in page.items]


def test_one_request_split_into_pages(upstream: FakeUpstream, make_context: ContextFactory) -> None:
    context = make_context()
    pages = list(paprika(upstream, context).pages(None, 128))
    assert [len(p.items) for p in pages] == [128, 128, 44]
    assert context.stats.requests == 1
    assert upstream_log(upstream, "coinpaprika")[0]["query"] == {"quotes": "USD"}
    assert pages[1].items[0].position == "tickers#128"
    assert pages[0].items[0].payload == json.loads(TICKERS.read_text())[0]
    # Each page's cursor covers that page and the ones before it.
    assert [len(p.cursor["seen"]) for p in pages] == [128, 256, 300]


def test_key_is_sent_bare_in_authorization(keyed_upstream: FakeUpstream, make_context: ContextFactory,
                                           api_key: str) -> None:
    source = paprika(keyed_upstream, make_context({"CP_KEY": api_key}), api_key_env="CP_KEY")
    assert len(ids(list(source.pages(None, 1000)))) == 300
    assert upstream_log(keyed_upstream, "coinpaprika")[0]["auth_ok"] is True


def test_paid_host_refuses_a_wrong_or_missing_key(keyed_upstream: FakeUpstream, make_context: ContextFactory,
                                                  api_key: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = api_key[::-1]
    with pytest.raises(SourceAuthError, match="HTTP 401") as caught:
        list(paprika(keyed_upstream, make_context({"CP_KEY": wrong}), api_key_env="CP_KEY").pages(None, 1000))
    assert wrong not in str(caught.value) and wrong not in caplog.text
    with pytest.raises(SourceAuthError, match="missing API key"):
        list(paprika(keyed_upstream, make_context()).pages(None, 1000))


def test_unchanged_listing_yields_nothing(upstream: FakeUpstream, make_context: ContextFactory) -> None:
    source = paprika(upstream, make_context())
    cursor = list(source.pages(None, 1000))[-1].cursor
    assert list(source.pages(cursor, 1000)) == []


def test_resumed_extract_skips_pages_already_stored(upstream: FakeUpstream, make_context: ContextFactory) -> None:
    source = paprika(upstream, make_context())
    pages = list(source.pages(None, 100))
    assert ids(list(source.pages(pages[0].cursor, 100))) == ids(pages[1:])


def test_only_updated_coins_are_yielded(changed_data_dir: Path, make_context: ContextFactory) -> None:
    with FakeUpstream(changed_data_dir) as fake:
        source = paprika(fake, make_context())
        cursor = list(source.pages(None, 1000))[-1].cursor
        fake.advance("coinpaprika")
        pages = list(source.pages(cursor, 1000))
    assert sorted(ids(pages)) == sorted(PAPRIKA_CHANGED)
    assert pages[-1].cursor["seen"]["btc-bitcoin"] == "2023-08-11T09:00:00Z"
    assert len(pages[-1].cursor["seen"]) == 300


def test_a_later_snapshot_yields_the_coins_it_moved(upstream: FakeUpstream, make_context: ContextFactory) -> None:
    source = paprika(upstream, make_context())
    cursor = list(source.pages(None, 1000))[-1].cursor
    upstream.advance("coinpaprika")  # the fake's derived snapshot stamps every coin 5 minutes later
    assert len(ids(list(source.pages(cursor, 1000)))) == 300


def test_html_listing_is_a_payload_error(upstream: FakeUpstream, make_context: ContextFactory) -> None:
    upstream.inject("coinpaprika", "html")
    with pytest.raises(PayloadError, match="/tickers.*HTML"):
        list(paprika(upstream, make_context()).pages(None, 1000))


def test_every_recorded_ticker_maps_to_a_valid_quote(upstream: FakeUpstream, make_context: ContextFactory) -> None:
    source = paprika(upstream, make_context())
    for payload in json.loads(TICKERS.read_text()):
        quote = quote_schema.load(source.to_unified(payload))
        assert float(quote["price_usd"]) == pytest.approx(payload["quotes"]["USD"]["price"])
        assert quote["observed_at"].isoformat().startswith(payload["last_updated"][:19])


def test_a_ticker_without_usd_is_rejected_with_a_reason(upstream: FakeUpstream,
                                                        make_context: ContextFactory) -> None:
    source = paprika(upstream, make_context())
    for payload in json.loads((FIXTURES / "coinpaprika_tickers_krw.json").read_text()):
        with pytest.raises(ValueError, match=r"quotes\.USD is missing \(quotes held: KRW\)"):
            source.to_unified(payload)
        with pytest.raises(ValidationError) as caught:
            validate_record(source, payload)
        assert "quotes.USD is missing" in json.dumps(caught.value.messages)


def test_a_dropped_quote_field_is_named(upstream: FakeUpstream, make_context: ContextFactory) -> None:
    source = paprika(upstream, make_context())
    payload = json.loads(TICKERS.read_text())[0]
    del payload["quotes"]["USD"]["volume_24h"]
    with pytest.raises(KeyError, match=r"quotes\.USD\.volume_24h"):
        source.to_unified(payload)
