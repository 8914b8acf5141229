"""Read news items from an RSS 2.0 or Atom feed, only those new or changed since the last load.

Settings (sources.toml): `url` (default CoinDesk's feed), `feed` (a label for
the feed in /news, default the source's name), `max_feed_bytes` (a bigger body
fails the source), `max_entries` (a feed listing more `<item>`/`<entry>`
elements fails the source, counted before parsing), and the HTTP settings every
API kind has (`timeout_seconds`, `max_retries`, `backoff_seconds`, `requests_per_minute`).

Each entry becomes one raw record holding the entry as received (guid, title,
link, published, updated, summary, feed title). An entry that cannot be stored
(a character XML forbids, see `feed_guard`) becomes a reject at its position,
`entry#<n>`; a feed declaring entities fails the source. Checkpoint: see `FeedCursor`.
"""
from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import feedparser

from kasparro.errors import PayloadError
from kasparro.sources import SourceContext, feed_guard, register
from kasparro.sources.base import CURSOR_SUMMARY, Expected, Page, RawItem, expect
from kasparro.sources.http import client_from_spec, display_url, number_setting
from kasparro.sources.watermark import chunked

DEFAULT_URL = "https://www.coindesk.com/arc/outboundfeeds/rss/"
ACCEPT = "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.1"
# A news feed polled every few minutes; CoinDesk's ttl is 10 minutes.
DEFAULT_REQUESTS_PER_MINUTE = 6
DEFAULT_MAX_FEED_BYTES = 5_000_000
DEFAULT_MAX_ENTRIES = 1000
# Guids remembered at the watermark; a feed lists tens of items, so this only guards the cursor's size.
MAX_SEEN = 2000
# feedparser flags these on feeds it read correctly; anything else it flags means the XML is broken.
HARMLESS_BOZO = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)
ENTRY_FIELDS = ("guid", "title", "link", "published", "updated", "summary")
EXPECTED_SCHEMA = {
    "guid": expect("string|null", required=False), "title": expect("string"), "link": expect("string"),
    "published": expect("string|null", required=False), "updated": expect("string|null", required=False),
    "summary": expect("string|null", required=False), "feed": expect("string"),
    "feed_title": expect("string|null", required=False),
}


def parse_feed_time(value: Any) -> datetime | None:
    """Parse an RSS (RFC 822) or Atom (ISO 8601) timestamp as UTC, or return None."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def entry_time(payload: Mapping[str, Any]) -> datetime | None:
    """Return when an entry last changed: the later of its published and updated times."""
    times = [t for t in (parse_feed_time(payload.get("published")), parse_feed_time(payload.get("updated"))) if t]
    return max(times, default=None)


def fingerprint(payload: Mapping[str, Any]) -> str:
    """Return a short hash of an entry's content, to notice an edit that keeps the guid."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


class FeedCursor:
    """The newest entry time loaded, and each guid's content fingerprint from the last feed read.

    An entry is read again only when it is unknown and not older than the
    watermark (new), or known with different content (edited or re-published).
    An unknown entry older than the watermark left the feed and came back: it
    was loaded before, so it is not extracted again. The final page keeps only
    guids the feed still lists, so the cursor stays the feed's size.
    """

    def __init__(self, cursor: Mapping[str, Any] | None) -> None:
        cursor = cursor or {}
        seen = cursor.get("seen")
        self.seen: dict[str, str] = dict(seen) if isinstance(seen, Mapping) else {}
        self.newest = parse_feed_time(cursor.get("newest"))
        self.listed: set[str] = set()

    def is_new(self, payload: Mapping[str, Any]) -> bool:
        """Return whether an entry should be extracted; note its guid as listed."""
        guid = payload.get("guid") or payload.get("link")
        if not isinstance(guid, str):
            return True
        self.listed.add(guid)
        if guid in self.seen:
            return self.seen[guid] != fingerprint(payload)
        when = entry_time(payload)
        return self.newest is None or when is None or when >= self.newest

    def advance(self, items: list[RawItem]) -> None:
        """Move the cursor past `items`, which are about to be handed over."""
        for item in items:
            guid = item.payload.get("guid") or item.payload.get("link")
            if isinstance(guid, str):
                self.seen[guid] = fingerprint(item.payload)
            when = entry_time(item.payload)
            if when is not None and (self.newest is None or when > self.newest):
                self.newest = when

    def cursor(self, final: bool = False) -> dict[str, Any]:
        """Return the cursor as of now; a final one forgets guids the feed no longer lists."""
        seen = {g: f for g, f in self.seen.items() if g in self.listed} if final else dict(self.seen)
        kept = dict(sorted(seen.items())[-MAX_SEEN:])
        newest = self.newest.isoformat() if self.newest else None
        return {"newest": newest, "seen": kept,
                CURSOR_SUMMARY: f"items up to {newest or 'none yet'}, {len(kept)} guids remembered"}


class RssSource:
    """One RSS 2.0 or Atom feed of news items."""

    kind = "rss"
    target = "news"

    def __init__(self, name: str, spec: Mapping[str, Any], context: SourceContext) -> None:
        self.name = name
        self.url = str(spec.get("url") or DEFAULT_URL)
        self.feed = str(spec.get("feed") or name)
        self.max_bytes = int(number_setting(name, spec, "max_feed_bytes", DEFAULT_MAX_FEED_BYTES, 1))
        self.max_entries = int(number_setting(name, spec, "max_entries", DEFAULT_MAX_ENTRIES, 1))
        self.client = client_from_spec(name, spec, context, default_rpm=DEFAULT_REQUESTS_PER_MINUTE)

    def pages(self, cursor: Mapping[str, Any] | None, page_size: int) -> Iterator[Page]:
        """Yield pages of the feed's entries that are new or changed since the cursor."""
        entries = self._entries(self.client.get_bytes(self.url, self.max_bytes, ACCEPT, "max_feed_bytes"))
        marks = FeedCursor(cursor)
        fresh = [item for item in entries if marks.is_new(item.payload)]
        chunks = list(chunked(fresh, page_size))
        for number, chunk in enumerate(chunks, 1):
            marks.advance(chunk)
            yield Page(chunk, marks.cursor(final=number == len(chunks)))

    def _entries(self, body: bytes) -> list[RawItem]:
        shown = display_url(self.url)
        try:
            data = feed_guard.prepare(body, self.max_entries)
        except feed_guard.FeedRefused as refused:
            raise PayloadError(f"GET {shown} returned a feed that {refused}", source=self.name) from None
        # A file object: given bytes, feedparser first tries them as a local file name. Relative URIs in
        # summaries stay as received: resolving them copies the base URI into every link of every entry.
        parsed = feedparser.parse(io.BytesIO(data), resolve_relative_uris=False)
        if parsed.bozo and not isinstance(parsed.get("bozo_exception"), HARMLESS_BOZO):
            raise PayloadError(f"GET {shown} returned a feed that is not well-formed XML: "
                               f"{str(parsed.get('bozo_exception'))[:200]}", source=self.name)
        if not parsed.version:
            raise PayloadError(f"GET {shown} returned no RSS or Atom feed", source=self.name)
        if len(parsed.entries) > self.max_entries:
            raise PayloadError(f"GET {shown} listed {len(parsed.entries)} entries, over max_entries = "
                               f"{self.max_entries}", source=self.name)
        # The feed's own title is no entry's content: a forbidden character in it is replaced, so that it
        # does not reject every entry of the feed.
        feed_title = parsed.feed.get("title")
        feed_title = feed_guard.replaced(feed_title) if isinstance(feed_title, str) else feed_title
        return [self._item({**{key: _entry_field(entry, key) for key in ENTRY_FIELDS}, "feed": self.feed,
                            "feed_title": feed_title}, f"entry#{index}") for index, entry in enumerate(parsed.entries)]

    def _item(self, payload: dict[str, Any], position: str) -> RawItem:
        fault = feed_guard.unstorable(payload, self.max_bytes)
        if fault is None:
            return RawItem(payload, position)
        return RawItem(feed_guard.storable(payload), position, error=f"{position}: {fault}")

    def expected_schema(self) -> Mapping[str, Expected]:
        """Return the entry fields this mapping reads."""
        return EXPECTED_SCHEMA

    def to_unified(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Map an entry to news fields; its time is the published time, else the updated one."""
        published = payload.get("published") or payload.get("updated")
        if not published:
            raise KeyError("published")
        stamp = parse_feed_time(published)
        updated = parse_feed_time(payload.get("updated"))
        return {
            "guid": payload.get("guid") or payload["link"],
            "title": payload["title"],
            "link": payload["link"],
            "summary": payload.get("summary"),
            "published_at": stamp.isoformat() if stamp else published,
            "updated_at": updated.isoformat() if updated else None,
            "feed": payload["feed"],
        }


def _entry_field(entry: Mapping[str, Any], key: str) -> Any:
    return entry.get("id" if key == "guid" else key)


register("rss")(RssSource)
