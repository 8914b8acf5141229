"""Recorded news feeds under /rss/<name>: captures served as they are, and one feed that moves on over time.

    /rss/<file stem>      data/upstream/rss/<stem>.xml byte for byte (the CoinDesk RSS 2.0 capture,
                          an Atom capture, a broken one)
    /rss/coindesk-live    the CoinDesk capture revealed in steps, newest items last; `advance`
                          moves one step, and step 2 also edits (re-publishes) an item shown since step 0
"""
from __future__ import annotations

import re
from pathlib import Path

LIVE_FEED = "coindesk-live"
LIVE_SOURCE = "coindesk_rss_2023-03-13"
# Items hidden at each step (the capture lists newest first): 10, then 5, then none.
LIVE_HIDDEN = (10, 5, 0)
EDIT_STEP = 2
EDITED_INDEX = 20  # an item every step shows
EDITED_UPDATED = "2023-03-13T11:00:00.000+00:00"
RSS_TYPE = "application/rss+xml; charset=utf-8"
ATOM_TYPE = "application/atom+xml; charset=utf-8"
_ITEM = re.compile(rb"[ \t]*<item>.*?</item>\s*", re.DOTALL)


def split_items(document: bytes) -> tuple[bytes, list[bytes], bytes]:
    """Split an RSS document into what comes before its items, the items, and what follows."""
    items = list(_ITEM.finditer(document))
    if not items:
        return document, [], b""
    return document[:items[0].start()], [m.group(0) for m in items], document[items[-1].end():]


def edit_item(item: bytes) -> bytes:
    """Re-publish an item: a corrected title and a later atom:updated, same guid."""
    item = re.sub(rb"<title><!\[CDATA\[(.*?)\]\]></title>", rb"<title><![CDATA[\1 (Updated)]]></title>", item,
                  count=1)
    return re.sub(rb"<atom:updated>[^<]*</atom:updated>",
                  b"<atom:updated>" + EDITED_UPDATED.encode() + b"</atom:updated>", item, count=1)


class Feeds:
    """The recorded feeds, and the step the live feed is at."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "rss"
        self.step = 0

    def names(self) -> list[str]:
        """Return every feed served, by the name in its path."""
        return sorted([p.stem for p in self.dir.glob("*.xml")] + [LIVE_FEED])

    def advance(self) -> None:
        """Move the live feed one step on, staying at the last."""
        self.step = min(self.step + 1, len(LIVE_HIDDEN) - 1)

    def body(self, name: str) -> tuple[bytes, str] | None:
        """Return a feed's body and content type, or None for an unknown feed."""
        if name == LIVE_FEED:
            return self._live(), RSS_TYPE
        path = self.dir / f"{name}.xml"
        if "/" in name or name.startswith(".") or not path.is_file():
            return None
        body = path.read_bytes()
        return body, ATOM_TYPE if b"<feed" in body[:1000] else RSS_TYPE

    def _live(self) -> bytes:
        head, items, tail = split_items((self.dir / f"{LIVE_SOURCE}.xml").read_bytes())
        if self.step >= EDIT_STEP:
            items[EDITED_INDEX] = edit_item(items[EDITED_INDEX])
        return head + b"".join(items[LIVE_HIDDEN[self.step]:]) + tail
