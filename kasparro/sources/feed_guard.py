"""Check a feed's bytes before feedparser reads them, for what feedparser itself does not bound.

feedparser expands a declared entity (`<!ENTITY a "…">`) in its lenient parser even after expat
refused the document for amplifying, joins each `xml:base` onto the one around it (a nested stack of
ever longer URIs), raises on a character reference to a surrogate, and counts entries only once all
are parsed. So, on the feed decoded to UTF-8 the way feedparser decodes it:

    declarations          `<!ENTITY`, `<!ATTLIST`, a DOCTYPE internal subset   refuse the feed
    entries               more `<item`/`<entry` elements than `max_entries`    refuse the feed
    base URIs             a base or resolved URI past MAX_URI_CHARS            dropped (the outer base stays)
    forbidden characters  one XML forbids, raw or as a character reference     FORBIDDEN in its place:
                                                                               that entry is rejected
    well-formedness       what expat refuses                                   refuse the feed (feedparser
                                                                               would parse it again, leniently)

The checks read bytes, not XML: a `<!ENTITY` or an `<item>` written inside a CDATA section counts too
(a feed quoting a DTD in CDATA is refused). A false refusal fails one source clearly; a missed
declaration could take the worker down.

A feed is refused with `FeedRefused`, whose message names the limit. An entry is checked once parsed
by `unstorable`, which says why it cannot be stored (a forbidden character, or more characters than
the feed had bytes) so the source rejects that entry alone.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from xml.parsers import expat

from feedparser import encodings, mixin, urls

# A URI longer than any link news validation keeps (2,000): a longer base is a bomb, not an address.
MAX_URI_CHARS = 2048
# A noncharacter, valid in XML, put where the feed had a character XML forbids, so that feedparser reads
# the rest of the feed and the entry holding it can be found and rejected.
FORBIDDEN = "\ufdd0"
REPLACEMENT = "\ufffd"
# What a rejected entry keeps of each field, as evidence (news validation keeps summaries up to 20,000).
MAX_EVIDENCE_CHARS = 20_000
_FORBIDDEN_UTF8 = FORBIDDEN.encode()
# Markup declarations (entities, attribute defaults: both expand), or a DOCTYPE with an internal subset.
# Every pattern here is possessive or stops at the next `<`, so each scan is linear in the feed.
_DECLARATIONS = re.compile(rb"<!(?:ENTITY|ATTLIST|ELEMENT|NOTATION)|<!DOCTYPE[^\[<>]*+\[", re.IGNORECASE)
_ENTRIES = re.compile(rb"<(?:[\w.-]++:)?(?:item|entry)[\s/>]")
# A character reference, or a raw character XML 1.0 forbids: C0 controls other than tab, newline and
# return, and U+FFFE / U+FFFF.
_CHARACTERS = re.compile(rb"&#(?:x([0-9A-Fa-f]++)|([0-9]++));|[\x00-\x08\x0b\x0c\x0e-\x1f]|\xef\xbf[\xbe\xbf]")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff" + FORBIDDEN + "]")


class FeedRefused(ValueError):
    """A feed that is not parsed at all; the message says which limit or rule it broke."""


def prepare(body: bytes, max_entries: int) -> bytes:
    """Return the feed as UTF-8 with forbidden characters marked, or raise FeedRefused."""
    data = decoded(body)
    if _DECLARATIONS.search(data):
        raise FeedRefused("declares entities or attribute defaults (<!ENTITY, <!ATTLIST or a DOCTYPE internal "
                          "subset): feeds that do are refused, their expansion is unbounded")
    entries = count_entries(data, max_entries + 1)
    if entries > max_entries:
        raise FeedRefused(f"lists more than {max_entries} entries (<item>/<entry> elements), over "
                          f"max_entries = {max_entries}; refused before parsing")
    marked = _CHARACTERS.sub(_mark, data)
    well_formed(marked)
    return marked


def well_formed(data: bytes) -> None:
    """Raise FeedRefused unless expat reads the feed, as feedparser's strict parser will.

    When expat refuses a feed, feedparser parses it again with its lenient pure-Python parser, and the
    source then refuses it anyway: 4 MB took 7 s that way. Expat alone, keeping nothing, takes a fraction.
    """
    parser = expat.ParserCreate(namespace_separator=" ")  # namespaces on, like feedparser's SAX reader
    try:
        parser.Parse(data, True)
    except expat.ExpatError as error:
        raise FeedRefused(f"is not well-formed XML: {str(error)[:200]}") from None


def decoded(body: bytes) -> bytes:
    """Decode the feed to UTF-8 exactly as feedparser would, so the checks see what its parsers see."""
    try:
        return encodings.convert_to_utf8({}, body, {})
    # UnicodeError: a declared encoding (utf-7) that decodes to a lone surrogate; ValueError: a declared
    # encoding whose name holds NUL ("embedded null character"); LookupError: one Python has no codec for.
    except (ValueError, LookupError) as error:
        raise FeedRefused(f"does not decode to text: {str(error)[:200]}") from None


def count_entries(data: bytes, stop: int) -> int:
    """Count `<item` and `<entry` start tags (any namespace prefix), stopping at `stop`."""
    found = 0
    for _ in _ENTRIES.finditer(data):
        found += 1
        if found >= stop:
            break
    return found


def _mark(hit: re.Match[bytes]) -> bytes:
    digits = hit.group(1) or hit.group(2)
    if digits is None:  # a raw forbidden character
        return _FORBIDDEN_UTF8
    significant = digits.lstrip(b"0") or b"0"
    # Eight significant digits reach past U+10FFFF already; a longer run is never turned into an int.
    if len(significant) > 8:
        return _FORBIDDEN_UTF8
    code = int(significant, 16 if hit.group(1) else 10)
    return hit.group(0) if _allowed(code) else _FORBIDDEN_UTF8


def _allowed(code: int) -> bool:
    # XML 1.0's Char production.
    return (code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD
            or 0x10000 <= code <= 0x10FFFF)


def unstorable(payload: Mapping[str, Any], max_chars: int) -> str | None:
    """Say why an entry cannot be stored as parsed, or return None when it can."""
    texts = [(key, value) for key, value in payload.items() if isinstance(value, str)]
    total = sum(len(value) for _, value in texts)
    if total > max_chars:
        return f"its fields hold {total:,} characters, more than the feed's max_feed_bytes = {max_chars:,}"
    bad = [key for key, value in texts if _UNSTORABLE.search(value)]
    if bad:
        return (f"{', '.join(bad)} held a character XML or the database forbids (a lone surrogate, NUL or "
                f"another control character, raw or as a character reference); stored here as U+FFFD")
    return None


def replaced(text: str) -> str:
    """Return `text` with every character that cannot be stored as U+FFFD."""
    return _UNSTORABLE.sub(REPLACEMENT, text)


def storable(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Return the entry as evidence that can be stored: forbidden characters as U+FFFD, each text cut short."""
    return {key: replaced(value[:MAX_EVIDENCE_CHARS]) if isinstance(value, str) else value
            for key, value in payload.items()}


def _bounded(join: Callable[..., str]) -> Callable[..., str]:
    def bounded(base: str, uri: str | None = None) -> str:
        joined = join(base, uri) if uri is not None else join(base)
        # Empty makes feedparser keep the outer base (`… or self.baseuri`), and an entry's link empty.
        return joined if len(joined) <= MAX_URI_CHARS else ""
    return bounded


def bound_base_uris() -> None:
    """Make feedparser drop a base or resolved URI longer than MAX_URI_CHARS (it has no setting for it).

    Nested `xml:base` attributes each join onto the base around them and feedparser keeps the whole
    stack: 360 KB of them took 931 MiB. Both names are looked up in feedparser's mixin at each call.
    """
    if not getattr(mixin.make_safe_absolute_uri, "bounded", False):
        for name, join in (("make_safe_absolute_uri", urls.make_safe_absolute_uri), ("_urljoin", urls._urljoin)):
            wrapped = _bounded(join)
            wrapped.bounded = True  # type: ignore[attr-defined]
            setattr(mixin, name, wrapped)


bound_base_uris()
