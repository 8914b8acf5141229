"""Hostile feeds, each read as the rss source reads it in a child under a 1 GiB memory limit.

The law: a feed comes out as stored entries plus rejected ones (each with its position and reason), or as
a clean source failure whose message names the limit or rule it broke. Never a dead process, a
MemoryError, or an exception the source does not expect.
"""
from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kasparro.errors import PayloadError
from kasparro.sources import SourceContext
from kasparro.sources.rss import RssSource
from tests.bounded import MIB, run_bounded

TARGET = "tests.sources.test_rss_hostile:read"


def read(body: bytes, **spec: Any) -> dict[str, Any]:
    """Read `body` as the rss source does; summarise what was loaded, rejected or refused."""
    source = RssSource("hostile", {"url": "http://feed.invalid/rss", **spec}, SourceContext())
    try:
        items = source._entries(body)
    except PayloadError as error:
        return {"failed": str(error)}
    texts = [value for item in items for value in item.payload.values() if isinstance(value, str)]
    stored = [json.dumps(item.payload, ensure_ascii=False).encode("utf-8") for item in items]  # as JSONB needs
    return {"loaded": [item.position for item in items if item.error is None],
            "rejected": {item.position: item.error for item in items if item.error is not None},
            "longest": max(map(len, texts), default=0),
            "nul": any(b"\\u0000" in payload for payload in stored)}


def item(number: int, title: str = "Bitcoin moves", summary: str = "a summary") -> str:
    return (f"<item><title>{title}</title><link>https://news.example/{number}</link><guid>g{number}</guid>"
            f"<pubDate>Mon, 13 Mar 2023 10:{number % 60:02d}:00 +0000</pubDate>"
            f"<description>{summary}</description></item>")


def feed(*items: str, prolog: str = "", base: str = "") -> bytes:
    based = f' xml:base="{base}"' if base else ""
    return (f'<?xml version="1.0" encoding="utf-8"?>\n{prolog}<rss version="2.0"{based}><channel>'
            f"<title>Hostile</title><link>https://news.example/</link>{''.join(items)}</channel></rss>"
            ).encode("utf-8", "surrogatepass")  # a raw lone surrogate becomes the bytes UTF-8 forbids


def laughs(entity_chars: int, references: int) -> bytes:
    """One internal entity feedparser keeps (no `&` in it), referenced many times: 100 KB became 300M characters."""
    return feed(item(1, "&a;" * references), prolog=f'<!DOCTYPE rss [\n<!ENTITY a "{"x" * entity_chars}">\n]>\n')


def billion_laughs(levels: int) -> bytes:
    """The classic: each entity ten of the one before."""
    declared = ['<!ENTITY l0 "lol">'] + [f'<!ENTITY l{n} "{f"&l{n - 1};" * 10}">' for n in range(1, levels + 1)]
    return feed(item(1, f"&l{levels};"), prolog=f"<!DOCTYPE rss [\n{chr(10).join(declared)}\n]>\n")


def attribute_defaults(default_chars: int, elements: int) -> bytes:
    """A default attribute value expat copies onto every element of that name."""
    prolog = f'<!DOCTYPE rss [\n<!ATTLIST category a CDATA "{"x" * default_chars}">\n]>\n'
    return feed(item(1, summary="<category>c</category>" * elements), prolog=prolog)


def nested_bases(levels: int, segment: int) -> bytes:
    """Relative xml:base attributes inside each other: feedparser keeps every ever longer join."""
    opened = f'<x xml:base="{"b" * segment}/">' * levels
    return feed(f"{item(1)[:-7]}{opened}{'</x>' * levels}</item>", base="https://news.example/")


def long_base(base_chars: int, entries: int) -> bytes:
    """One long base URI that every relative link of every entry is resolved against."""
    links = "".join(f"<item><title>t</title><link>{n}</link></item>" for n in range(entries))
    return feed(links, base="https://news.example/" + "b" * base_chars + "/")


def assert_bounded(body: bytes, **spec: Any) -> dict[str, Any]:
    outcome = run_bounded(TARGET, body, memory_mib=1024, seconds=60, **spec)
    assert outcome.clean(), str(outcome)
    summary: dict[str, Any] = outcome.value
    assert not summary.get("nul"), "a payload holds NUL, which PostgreSQL refuses"
    # No field outgrows the feed by more than a small constant factor: nothing expanded.
    assert summary.get("longest", 0) <= 4 * len(body) + 4096
    assert outcome.peak_bytes - outcome.baseline_bytes < 200 * MIB, str(outcome)
    return summary


@pytest.mark.parametrize("body", [laughs(10_000, 30_000), billion_laughs(7), attribute_defaults(10_000, 5000)],
                         ids=["quadratic-blowup", "billion-laughs", "attribute-defaults"])
def test_a_feed_declaring_entities_is_refused_before_any_expansion(body: bytes) -> None:
    summary = assert_bounded(body)

    assert "declares entities or attribute defaults" in summary["failed"]


@pytest.mark.parametrize("body, entries", [(nested_bases(3000, 100), 1), (long_base(1_000_000, 900), 900)],
                         ids=["nested", "long"])
def test_base_uris_cannot_grow_a_feed_past_its_size(body: bytes, entries: int) -> None:
    summary = assert_bounded(body)  # 360 KB of nested bases took 887 MiB, a 1 MB base 1.7 GiB

    assert len(summary["loaded"]) == entries and summary["longest"] <= 4096


def test_a_forbidden_character_in_the_feed_title_is_replaced_not_held_against_every_entry() -> None:
    body = feed(item(0), item(1)).replace(b"<title>Hostile</title>", b"<title>Hostile &#0;</title>")

    summary = assert_bounded(body)

    assert summary["loaded"] == ["entry#0", "entry#1"]


POISONS = {"surrogate-hex": "&#xD83D;", "surrogate-decimal": "&#55357;", "nul-reference": "&#0;",
           "past-unicode": "&#x110000;", "huge-reference": "&#" + "9" * 5000 + ";", "raw-nul": "\x00",
           "raw-control": "\x0b", "noncharacter": "&#xFFFE;"}


@pytest.mark.parametrize("poison", POISONS.values(), ids=POISONS.keys())
def test_an_item_holding_a_forbidden_character_is_rejected_at_its_position_and_its_neighbours_load(
        poison: str) -> None:
    body = feed(item(0), item(1, f"Bad {poison} title"), item(2))

    summary = assert_bounded(body)

    assert summary["loaded"] == ["entry#0", "entry#2"]
    assert list(summary["rejected"]) == ["entry#1"]
    assert summary["rejected"]["entry#1"].startswith("entry#1: title held a character XML or the database forbids")


def test_a_feed_whose_declared_encoding_decodes_to_a_lone_surrogate_is_refused() -> None:
    body = (b'<?xml version="1.0" encoding="utf-7"?><rss version="2.0"><channel><title>t</title>'
            b"<item><title>a+2D0-b</title><link>https://n.example/1</link></item></channel></rss>")  # +2D0-: D83D

    summary = assert_bounded(body)  # feedparser raised UnicodeEncodeError

    assert "does not decode to text" in summary["failed"]


@pytest.mark.parametrize("encoding", [b"utf-8\x00", b"u\x00tf-8"])
def test_a_feed_whose_declared_encoding_name_holds_nul_is_refused(encoding: bytes) -> None:
    body = (b'<?xml version="1.0" encoding="' + encoding + b'"?><rss version="2.0"><channel><title>t</title>'
            b"<item><title>a</title><link>https://n.example/1</link></item></channel></rss>")

    summary = assert_bounded(body)  # found by the generated feeds: ValueError from the codec lookup

    assert "does not decode to text" in summary["failed"]


def test_a_character_reference_xml_allows_is_kept() -> None:
    summary = assert_bounded(feed(item(0, "Caf&#xE9; &#128512; &#x9;tab")))

    assert summary["loaded"] == ["entry#0"] and summary["rejected"] == {}


def test_a_malformed_feed_is_refused_for_a_fraction_of_what_parsing_it_would_cost() -> None:
    good = feed(*(item(n, "t", "&lt;b&gt;x&lt;/b&gt; " * 200) for n in range(250)))
    broken = good.replace(b"</channel>", b"<bad<</channel>")  # expat stops at the very end

    started = time.perf_counter()
    assert len(read(good)["loaded"]) == 250
    parsing = time.perf_counter() - started
    started = time.perf_counter()
    assert "is not well-formed XML" in read(broken)["failed"]
    refusing = time.perf_counter() - started

    # feedparser parsed it twice before (strict, then lenient): 1.6 times the cost of a good feed.
    assert refusing < parsing / 4


def test_a_feed_listing_more_entries_than_max_entries_is_refused_before_parsing() -> None:
    body = feed(*(f"<item><title>t</title><link>https://n.example/{n}</link></item>" for n in range(100_000)))

    summary = assert_bounded(body)  # parsing them all took 13 s and 172 MB

    assert "lists more than 1000 entries" in summary["failed"]
    assert "max_entries = 1000; refused before parsing" in summary["failed"]


def test_atom_entries_count_against_max_entries_too() -> None:
    entries = "".join(f"<atom:entry><atom:title>t</atom:title></atom:entry>" for _ in range(11))
    body = (b'<?xml version="1.0"?><atom:feed xmlns:atom="http://www.w3.org/2005/Atom"><atom:title>f</atom:title>'
            + entries.encode() + b"</atom:feed>")

    assert "max_entries = 10" in read(body, max_entries=10)["failed"]


# Pieces of a hostile feed: each is a fragment of text inside an item's title or summary.
reference = st.one_of(st.integers(0, 0x11FFFF).map(lambda c: f"&#x{c:X};"),
                      st.integers(0, 0x11FFFF).map(lambda c: f"&#{c};"),
                      st.integers(9, 3000).map(lambda n: "&#" + "1" * n + ";"))
raw = st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF).filter(lambda c: c not in "<&")
tricks = st.sampled_from(["&a;", "&lol9;", "&amp;#xD83D;", "&nbsp;", "&#x26;#0;", "<![CDATA[&#0;]]>",
                          "&lt;b&gt;", "]]>", "<!-- & -->"])
nesting = st.integers(1, 1000).map(lambda depth: "<x>" * depth + "n" + "</x>" * depth)
fragment = st.one_of(reference, raw, tricks, nesting, st.text(max_size=20).map(lambda t: t.replace("<", "")
                                                                                .replace("&", "")))
prologs = st.sampled_from(["", "", "", "<!-- c -->", '<!DOCTYPE rss PUBLIC "-//N//D" "x.dtd">',
                           '<!DOCTYPE rss [<!ENTITY a "aaaa">]>', '<!DOCTYPE rss [<!ENTITY % p "x"> %p;]>'])


@st.composite
def hostile_feeds(draw: st.DrawFn) -> bytes:
    pieces = draw(st.lists(st.lists(fragment, max_size=5).map("".join), min_size=1, max_size=4))
    once = sum(len(piece) * 2 + 200 for piece in pieces)
    # A huge item count, sometimes; within max_feed_bytes, as the HTTP client refuses a bigger body.
    repeat = min(draw(st.sampled_from([1, 1, 1, 400, 3000])), max(1, 600_000 // once))
    body = feed(*(item(n, title, title) for n, title in enumerate(pieces * repeat)), prolog=draw(prologs))
    # Invalid UTF-8 and raw surrogates as bytes, spliced in anywhere.
    for junk, where in draw(st.lists(st.tuples(st.sampled_from([b"\xed\xa0\xbd", b"\xff", b"\xc3", b"\x00"]),
                                               st.floats(0, 1)), max_size=3)):
        cut = int(where * len(body))
        body = body[:cut] + junk + body[cut:]
    return body


def read_all(bodies: list[bytes]) -> list[dict[str, Any]]:
    """Read several feeds in one child: starting a child costs more than most feeds."""
    return [read(body) for body in bodies]


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(bodies=st.lists(hostile_feeds(), min_size=6, max_size=6))
def test_generated_hostile_feeds_load_or_reject_entries_or_fail_cleanly(bodies: list[bytes]) -> None:
    outcome = run_bounded("tests.sources.test_rss_hostile:read_all", bodies, memory_mib=1024, seconds=60)

    assert outcome.clean(), str(outcome)
    assert outcome.peak_bytes - outcome.baseline_bytes < 200 * MIB, str(outcome)
    for body, summary in zip(bodies, outcome.value, strict=True):
        if "failed" in summary:
            assert summary["failed"].startswith("hostile: GET http://feed.invalid/rss returned")
            continue
        assert not summary["nul"] and summary["longest"] <= 4 * len(body) + 4096
        assert all(reason.startswith(position) for position, reason in summary["rejected"].items())
