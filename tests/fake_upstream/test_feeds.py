"""The fake upstream's recorded news feeds: captures byte for byte, a live feed that moves on, a broken one."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import feedparser
import pytest
import requests

from kasparro.fake_upstream import FakeUpstream
from kasparro.fake_upstream.feeds import EDITED_INDEX, LIVE_HIDDEN, split_items

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "upstream"
CAPTURE = DATA_DIR / "rss" / "coindesk_rss_2023-03-13.xml"


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(DATA_DIR) as fake:
        yield fake


def get(fake: FakeUpstream, name: str) -> requests.Response:
    return requests.get(fake.rss_url(name), timeout=5)


def titles(response: requests.Response) -> list[str]:
    return [entry.title for entry in feedparser.parse(response.content).entries]


def test_the_coindesk_capture_is_served_byte_for_byte_as_rss(upstream: FakeUpstream) -> None:
    response = get(upstream, "coindesk_rss_2023-03-13")

    assert response.status_code == 200 and response.content == CAPTURE.read_bytes()
    assert response.headers["Content-Type"].startswith("application/rss+xml")
    assert upstream.requests[-1]["provider"] == "rss" and upstream.requests[-1]["status"] == 200


def test_the_atom_capture_is_served_as_atom(upstream: FakeUpstream) -> None:
    response = get(upstream, "sample_atom_2023-03-13")

    parsed = feedparser.parse(response.content)
    assert response.headers["Content-Type"].startswith("application/atom+xml")
    assert parsed.version == "atom10" and not parsed.bozo and len(parsed.entries) == 6


def test_the_broken_feed_is_not_well_formed(upstream: FakeUpstream) -> None:
    parsed = feedparser.parse(get(upstream, "broken_rss").content)

    assert parsed.bozo and "not well-formed" in str(parsed.bozo_exception)


def test_the_live_feed_reveals_newer_items_then_edits_one(upstream: FakeUpstream) -> None:
    full = titles(get(upstream, "coindesk_rss_2023-03-13"))
    steps = [titles(get(upstream, "coindesk-live"))]
    for _ in range(3):  # the last advance stays on the last step
        upstream.advance("rss")
        steps.append(titles(get(upstream, "coindesk-live")))

    assert [len(s) for s in steps] == [50 - LIVE_HIDDEN[0], 50 - LIVE_HIDDEN[1], 50, 50]
    assert steps[0] == full[LIVE_HIDDEN[0]:] and steps[1] == full[LIVE_HIDDEN[1]:]
    assert steps[2][EDITED_INDEX] == full[EDITED_INDEX] + " (Updated)"
    assert [t for i, t in enumerate(steps[2]) if i != EDITED_INDEX] == [t for i, t in enumerate(full)
                                                                          if i != EDITED_INDEX]
    assert upstream.state()["feeds"]["live_step"] == 2
    upstream.reset()
    assert titles(get(upstream, "coindesk-live")) == steps[0]


def test_advance_all_moves_the_live_feed_too_and_unknown_feeds_are_404(upstream: FakeUpstream) -> None:
    upstream.advance()

    assert upstream.state()["feeds"]["live_step"] == 1
    missing = get(upstream, "nope")
    assert missing.status_code == 404 and missing.json() == {"error": "not found"}
    assert get(upstream, "..%2Fcoinpaprika%2Fcoins").status_code == 404
    assert requests.post(upstream.rss_url("coindesk-live"), timeout=5).status_code == 405
    assert json.loads(requests.post(upstream.base_url + "/__admin/advance", json={"provider": "rss"},
                                    headers=upstream.admin_headers, timeout=5).content)["feeds"]["live_step"] == 2


def test_split_items_keeps_the_document_around_its_items() -> None:
    head, items, tail = split_items(CAPTURE.read_bytes())

    assert len(items) == 50 and head + b"".join(items) + tail == CAPTURE.read_bytes()
