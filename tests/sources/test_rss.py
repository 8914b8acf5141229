"""The RSS/Atom source against the fake upstream's recorded feeds: parsing, bounds, the incremental cursor."""
from __future__ import annotations

from collections.abc import Callable

import pytest
from marshmallow import ValidationError

from kasparro.catalog import declared_sources
from kasparro.errors import PayloadError
from kasparro.fake_upstream import FakeUpstream
from kasparro.pipeline.transform import validate_record
from kasparro.sources import SourceContext, build_source, target_of
from kasparro.sources.base import Page, RawItem
from kasparro.sources.rss import FeedCursor, RssSource, parse_feed_time

from .conftest import FAST_RPM, ROOT

ContextFactory = Callable[..., SourceContext]
CAPTURE = "coindesk_rss_2023-03-13"


def rss(fake: FakeUpstream, context: SourceContext, feed: str = CAPTURE, **settings: object) -> RssSource:
    spec = {"kind": "rss", "url": fake.rss_url(feed), "feed": "wire", "requests_per_minute": FAST_RPM,
            "backoff_seconds": 0, **settings}
    source = build_source("news", spec, context)
    assert isinstance(source, RssSource)
    return source


def guids(pages: list[Page]) -> list[str]:
    return [item.payload["guid"] for page in pages for item in page.items]


def test_the_coindesk_capture_is_read_entry_by_entry_as_received(upstream: FakeUpstream,
                                                                 make_context: ContextFactory) -> None:
    context = make_context()
    pages = list(rss(upstream, context).pages(None, 20))

    assert [len(p.items) for p in pages] == [20, 20, 10] and context.stats.requests == 1
    first = pages[0].items[0].payload
    assert first["guid"] == "GAHBBCJVKFCXDLONTKPLD5TODI" and first["published"] == "Mon, 13 Mar 2023 10:13:50 +0000"
    assert first["feed"] == "wire" and first["feed_title"].startswith("CoinDesk")
    assert pages[-1].cursor["newest"] == "2023-03-13T10:13:51.231000+00:00"  # the newest atom:updated
    assert len(pages[-1].cursor["seen"]) == 50
    assert pages[-1].cursor["summary"] == "items up to 2023-03-13T10:13:51.231000+00:00, 50 guids remembered"


def test_an_atom_entry_maps_to_news_fields_and_falls_back_to_its_updated_time(
        upstream: FakeUpstream, make_context: ContextFactory) -> None:
    source = rss(upstream, make_context(), "sample_atom_2023-03-13")
    entries = [item.payload for page in source.pages(None, 100) for item in page.items]

    undated = next(e for e in entries if e["published"] is None)
    item = validate_record(source, undated)
    assert item["published_at"].isoformat() == "2023-03-13T10:20:00+00:00"
    assert item["guid"].startswith("urn:uuid:") and item["link"].startswith("https://")
    assert len(entries) == 6 and target_of({"kind": "rss"}) == "news"


def test_a_second_read_of_an_unchanged_feed_yields_nothing(upstream: FakeUpstream,
                                                           make_context: ContextFactory) -> None:
    source = rss(upstream, make_context())
    cursor = list(source.pages(None, 100))[-1].cursor

    assert list(source.pages(cursor, 100)) == []


def test_the_live_feed_yields_only_new_items_then_the_edited_one(upstream: FakeUpstream,
                                                                  make_context: ContextFactory) -> None:
    source = rss(upstream, make_context(), "coindesk-live")
    first = list(source.pages(None, 100))
    upstream.advance("rss")
    second = list(source.pages(first[-1].cursor, 100))
    upstream.advance("rss")
    third = list(source.pages(second[-1].cursor, 100))

    assert [len(guids(p)) for p in (first, second, third)] == [40, 5, 6]
    edited = [i.payload for i in third[0].items if i.payload["title"].endswith("(Updated)")]
    assert len(edited) == 1 and edited[0]["guid"] in guids(first)


def test_an_old_item_that_left_the_feed_and_came_back_is_not_read_again() -> None:
    newer = {"guid": "b", "title": "B", "link": "https://x/b", "published": "2023-03-13T10:00:00Z"}
    older = {"guid": "a", "title": "A", "link": "https://x/a", "published": "2023-03-13T09:00:00Z"}
    marks = FeedCursor(None)
    assert marks.is_new(newer) and marks.is_new(older)
    marks.advance([RawItem(newer, "1"), RawItem(older, "2")])
    later = FeedCursor({**marks.cursor(), "seen": {"b": marks.cursor()["seen"]["b"]}})  # "a" dropped out

    assert not later.is_new(older)
    assert later.is_new({**older, "guid": "c"}) is False  # older than the watermark and unknown
    assert later.is_new({**newer, "title": "B, edited"})


def test_a_broken_feed_fails_with_a_payload_error(upstream: FakeUpstream, make_context: ContextFactory) -> None:
    with pytest.raises(PayloadError, match="not well-formed XML"):
        list(rss(upstream, make_context(), "broken_rss").pages(None, 100))


def test_a_body_naming_a_local_file_is_parsed_as_text_never_opened(upstream: FakeUpstream,
                                                                   make_context: ContextFactory) -> None:
    capture = ROOT / "data" / "upstream" / "rss" / f"{CAPTURE}.xml"

    with pytest.raises(PayloadError, match="not well-formed|no RSS or Atom feed"):
        rss(upstream, make_context())._entries(str(capture).encode())


def test_a_feed_over_the_size_or_entry_limit_is_refused(upstream: FakeUpstream,
                                                        make_context: ContextFactory) -> None:
    with pytest.raises(PayloadError, match=r"over the 1000 byte limit \(max_feed_bytes\)|more than 1000 bytes.*max_feed_bytes"):
        list(rss(upstream, make_context(), max_feed_bytes=1000).pages(None, 100))
    with pytest.raises(PayloadError, match="more than 10 entries .*, over max_entries = 10; refused before parsing"):
        list(rss(upstream, make_context(), max_entries=10).pages(None, 100))


@pytest.mark.parametrize("change, reason", [
    ({"title": "x" * 5000}, "title"), ({"link": "javascript:alert(1)"}, "link"),
    ({"published": "yesterday-ish"}, "published_at"), ({"published": "Mon, 13 Mar 2090 10:13:50 +0000"},
                                                       "published_at"),
    ({"summary": "s" * 30_000}, "summary"), ({"title": None}, "title"),
])
def test_an_entry_with_absurd_fields_is_rejected_with_the_field_named(change: dict[str, object], reason: str,
                                                                      upstream: FakeUpstream,
                                                                      make_context: ContextFactory) -> None:
    source = rss(upstream, make_context())
    entry = next(iter(source.pages(None, 100))).items[0].payload

    with pytest.raises(ValidationError) as caught:
        validate_record(source, {**entry, **change})
    assert reason in caught.value.messages


def test_feed_times_parse_in_both_formats() -> None:
    assert parse_feed_time("Mon, 13 Mar 2023 10:13:50 +0000").isoformat() == "2023-03-13T10:13:50+00:00"
    assert parse_feed_time("2023-03-13T12:13:50+02:00").isoformat() == "2023-03-13T10:13:50+00:00"
    assert parse_feed_time("soon") is None and parse_feed_time(None) is None


def test_offline_the_shipped_feed_reads_the_fake_upstream_and_keeps_the_real_url_otherwise() -> None:
    config = {"SOURCES_FILE": str(ROOT / "sources.toml"), "FAKE_UPSTREAM_URL": "http://upstream:8900/"}
    offline = declared_sources({**config, "OFFLINE": True})["coindesk_news"]
    online = declared_sources({**config, "OFFLINE": False})["coindesk_news"]

    assert offline["url"] == "http://upstream:8900/rss/coindesk-live"
    assert online["url"] == "https://www.coindesk.com/arc/outboundfeeds/rss/"
