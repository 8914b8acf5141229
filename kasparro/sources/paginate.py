"""Decide the next request of a paginated API from the answer to the last one; send nothing itself.

Each paginator takes the previous request and its answer (body, headers, records read) and returns the
next request, or None when the listing has ended:

    none        one request
    page        `page_param` counts up from `start`; ends on an empty page, or one shorter than `page_size`
    offset      `offset_param` moves by `limit` (sent as `limit_param`); ends on a short or empty page, or
                when the offset reaches the total at `total_path` in the body
    cursor      the value at `next_cursor_path` in the body is sent back as `cursor_param`, plus `cursor_adjust`
                (CryptoCompare pages back in time: next `toTs` = `Data.TimeFrom` - 1); ends when it is missing
                or empty, or falls below `floor` (the checkpoint, for an API paged backwards)
    next_url    the URL at `next_url_path` in the body (relative to the last one); ends when missing or empty
    link        the `Link` header's rel="next" URL; ends when there is none
    time        [`start_param`, `end_param`) windows of `window` (in `unit`, s or ms) from the start to `end`
                (default: now); Binance klines send `startTime`/`endTime`/`limit`

`walk` drives any of them and stops after `max_pages`, or at a request it already sent (a repeated cursor
or URL): a misbehaving API ends the loop, never spins it.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urljoin

KINDS = ("none", "page", "offset", "cursor", "next_url", "link", "time")
TIME_UNITS = {"s": 1, "ms": 1000}
_LINK = re.compile(r'<([^>]*)>\s*((?:;\s*[^;,]+)*)')


@dataclass(frozen=True)
class Request:
    """The paging part of a request: parameters laid over the configured ones, or a whole `url` to follow."""

    params: Mapping[str, Any] = field(default_factory=dict)
    url: str | None = None

    def key(self) -> tuple[Any, ...]:
        """Return what makes two requests the same one."""
        return self.url, tuple(sorted((k, str(v)) for k, v in self.params.items()))


@dataclass(frozen=True)
class Response:
    """What the paginators read of an answer: its decoded body, its headers, how many records it held, its URL."""

    body: Any
    headers: Mapping[str, str]
    records: int
    url: str = ""
    data: Any = None  # the caller's own reading of the answer (its records), passed through untouched


class Paginator(Protocol):
    """Say what to ask first, and what to ask after each answer."""

    def first(self) -> Request | None:
        """Return the first request, or None when there is nothing to ask."""
        ...

    def next(self, request: Request, response: Response) -> Request | None:
        """Return the request after `request`, whose answer was `response`, or None when the listing has ended."""
        ...


def value_at(body: Any, path: str) -> Any:
    """Return the value at a dotted path into nested objects (a number indexes a list), or None if it is not there."""
    node = body
    for key in path.split(".") if path else ():
        if isinstance(node, Mapping):
            node = node.get(key)
        elif isinstance(node, list) and key.lstrip("-").isdigit() and -len(node) <= int(key) < len(node):
            node = node[int(key)]
        else:
            return None
    return node


class Single:
    """One request: the API answers everything at once."""

    def first(self) -> Request:
        """Ask with the configured parameters only."""
        return Request()

    def next(self, request: Request, response: Response) -> Request | None:
        """End after the first answer."""
        return None


@dataclass(frozen=True)
class PageNumber:
    """Pages counted up from `start`; a page emptier than `page_size` (any page, without one) is the last."""

    page_param: str
    start: int = 1
    page_size: int | None = None

    def first(self) -> Request:
        """Ask for the first page."""
        return Request({self.page_param: self.start})

    def next(self, request: Request, response: Response) -> Request | None:
        """Ask for the next page, unless this one was empty or short."""
        if response.records == 0 or (self.page_size is not None and response.records < self.page_size):
            return None
        return Request({self.page_param: int(request.params[self.page_param]) + 1})


@dataclass(frozen=True)
class OffsetLimit:
    """Offsets moving by `limit`; a short page, or an offset at the body's total, is the end."""

    offset_param: str
    limit_param: str
    limit: int
    start: int = 0
    total_path: str | None = None

    def first(self) -> Request:
        """Ask from the start offset."""
        return Request({self.offset_param: self.start, self.limit_param: self.limit})

    def next(self, request: Request, response: Response) -> Request | None:
        """Ask from the next offset, unless this page was short or the total is reached."""
        offset = int(request.params[self.offset_param]) + self.limit
        total = value_at(response.body, self.total_path) if self.total_path else None
        if response.records < self.limit or (_is_number(total) and offset >= total):
            return None
        return Request({self.offset_param: offset, self.limit_param: self.limit})


@dataclass(frozen=True)
class BodyCursor:
    """A cursor read from each answer and sent back; `adjust` is added to a numeric one, `floor` ends the walk."""

    next_cursor_path: str
    cursor_param: str
    adjust: int = 0
    floor: float | None = None
    start: Any = None

    def first(self) -> Request:
        """Ask without a cursor, or from `start` when one is given."""
        return Request({} if self.start is None else {self.cursor_param: self.start})

    def next(self, request: Request, response: Response) -> Request | None:
        """Send back the answer's cursor, unless it is missing, empty, or below the floor."""
        cursor = value_at(response.body, self.next_cursor_path)
        if cursor is None or cursor == "" or isinstance(cursor, (bool, dict, list)):
            return None
        if self.adjust:
            if not _is_number(cursor):
                return None
            cursor += self.adjust
        if self.floor is not None and _is_number(cursor) and cursor < self.floor:
            return None
        return Request({self.cursor_param: cursor})


@dataclass(frozen=True)
class NextUrl:
    """The next page's URL read from each answer (relative to the answer's own URL)."""

    next_url_path: str

    def first(self) -> Request:
        """Ask with the configured parameters only."""
        return Request()

    def next(self, request: Request, response: Response) -> Request | None:
        """Follow the answer's next URL, unless it is missing or empty."""
        return _follow(response.url, value_at(response.body, self.next_url_path))


class LinkHeader:
    """The next page's URL from the `Link` header (RFC 8288, rel="next")."""

    def first(self) -> Request:
        """Ask with the configured parameters only."""
        return Request()

    def next(self, request: Request, response: Response) -> Request | None:
        """Follow the rel="next" link, unless the answer has none."""
        return _follow(response.url, next_link(response.headers.get("Link", "")))


def next_link(header: str) -> str | None:
    """Return the target of a Link header's rel="next", or None."""
    for target, params in _LINK.findall(header or ""):
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "rel" and "next" in value.strip().strip('"').lower().split():
                return target
    return None


@dataclass(frozen=True)
class TimeWindow:
    """Windows of `window` time units from `start` until `end` (or now), sent as `start_param` and `end_param`."""

    start_param: str
    end_param: str
    window: int
    start: int
    end: int | None = None
    unit: str = "ms"
    now: Callable[[], float] = time.time

    def first(self) -> Request | None:
        """Ask for the first window, unless it begins after the end."""
        return None if self.start > self._end() else self._window(self.start)

    def next(self, request: Request, response: Response) -> Request | None:
        """Ask for the next window, unless this one reached the end."""
        begin = int(request.params[self.start_param]) + self.window
        return None if begin > self._end() else self._window(begin)

    def _end(self) -> int:
        return self.end if self.end is not None else int(self.now() * TIME_UNITS[self.unit])

    def _window(self, begin: int) -> Request:
        # Both ends are inclusive at Binance, so a window ends a unit before the next one begins.
        return Request({self.start_param: begin, self.end_param: min(begin + self.window - 1, self._end())})


def walk(paginator: Paginator, fetch: Callable[[Request], Response],
         max_pages: int) -> Iterator[tuple[Request, Response]]:
    """Send the paginator's requests through `fetch`, yielding each with its answer, for `max_pages` at most.

    A request already sent ends the walk: an API that hands back the same cursor or URL would
    otherwise be asked the same page for ever.
    """
    request: Request | None = paginator.first()
    sent: set[tuple[Any, ...]] = set()
    while request is not None and len(sent) < max_pages and request.key() not in sent:
        sent.add(request.key())
        response = fetch(request)
        yield request, response
        request = paginator.next(request, response)


def _follow(current: str, target: Any) -> Request | None:
    if not isinstance(target, str) or not target.strip():
        return None
    return Request(url=urljoin(current, target.strip()))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
