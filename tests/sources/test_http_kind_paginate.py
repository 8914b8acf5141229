"""Paginators: each one's stop condition, the hard max_pages, and a repeated cursor or URL ending the walk."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kasparro.sources import paginate
from kasparro.sources.paginate import Request, Response, walk


def pages_of(bodies: list[Any], count: Callable[[Any], int] = len, headers: list[dict[str, str]] | None = None,
             base: str = "http://api.test/v1/items") -> tuple[Callable[[Request], Response], list[Request]]:
    """Answer the n-th request with the n-th body (an empty list past the last); keep the requests."""
    sent: list[Request] = []

    def fetch(request: Request) -> Response:
        index = len(sent)
        sent.append(request)
        body = bodies[index] if index < len(bodies) else []
        return Response(body, (headers or [])[index] if headers and index < len(headers) else {}, count(body),
                        request.url or base)

    return fetch, sent


def run(paginator: paginate.Paginator, fetch: Callable[[Request], Response], max_pages: int = 50) -> list[Any]:
    return [response.body for _, response in walk(paginator, fetch, max_pages)]


def test_none_asks_once() -> None:
    fetch, sent = pages_of([[1, 2], [3]])
    assert run(paginate.Single(), fetch) == [[1, 2]]
    assert sent == [Request()]


def test_page_number_counts_up_and_stops_on_a_short_page() -> None:
    fetch, sent = pages_of([[1, 2], [3, 4], [5]])
    assert run(paginate.PageNumber("page", 1, page_size=2), fetch) == [[1, 2], [3, 4], [5]]
    assert [r.params["page"] for r in sent] == [1, 2, 3]


def test_page_number_without_a_size_stops_on_an_empty_page() -> None:
    fetch, sent = pages_of([[1, 2], [3], []])
    assert run(paginate.PageNumber("p", 0), fetch) == [[1, 2], [3], []]
    assert [r.params["p"] for r in sent] == [0, 1, 2]


def test_offset_moves_by_limit_and_stops_on_a_short_page() -> None:
    fetch, sent = pages_of([[1, 2], [3, 4], [5]])
    assert run(paginate.OffsetLimit("offset", "limit", 2), fetch) == [[1, 2], [3, 4], [5]]
    assert [(r.params["offset"], r.params["limit"]) for r in sent] == [(0, 2), (2, 2), (4, 2)]


def test_offset_stops_at_the_total_in_the_body() -> None:
    bodies = [{"data": [1, 2], "meta": {"total": 4}}, {"data": [3, 4], "meta": {"total": 4}}]
    fetch, sent = pages_of(bodies, count=lambda body: len(body["data"]) if body else 0)
    run(paginate.OffsetLimit("offset", "limit", 2, total_path="meta.total"), fetch)
    assert len(sent) == 2  # full pages both, but the total says there is no third


def test_cursor_is_sent_back_and_a_missing_or_empty_one_ends() -> None:
    for last in ({"next": None}, {"next": ""}, {}):
        fetch, sent = pages_of([{"next": "a"}, {"next": "b"}, last], count=lambda body: 1)
        run(paginate.BodyCursor("next", "cursor"), fetch)
        assert [r.params.get("cursor") for r in sent] == [None, "a", "b"]


def test_a_repeated_cursor_ends_the_walk_instead_of_spinning() -> None:
    fetch, sent = pages_of([{"next": "a"}, {"next": "b"}] + [{"next": "a"}] * 100, count=lambda body: 1)
    run(paginate.BodyCursor("next", "cursor"), fetch, max_pages=1000)
    assert [r.params.get("cursor") for r in sent] == [None, "a", "b"]


def test_cursor_adjust_pages_back_in_time_like_cryptocompare_and_stops_below_the_floor() -> None:
    bodies = [{"Data": {"TimeFrom": 300}}, {"Data": {"TimeFrom": 200}}, {"Data": {"TimeFrom": 100}}]
    fetch, sent = pages_of(bodies, count=lambda body: 1)
    run(paginate.BodyCursor("Data.TimeFrom", "toTs", adjust=-1, floor=150), fetch)
    assert [r.params.get("toTs") for r in sent] == [None, 299, 199]  # 99 is below the floor


def test_next_url_is_followed_relative_to_the_last_and_a_repeat_ends() -> None:
    bodies = [{"next": "/v1/items?after=2"}, {"next": "http://api.test/v1/items?after=4"},
              {"next": "/v1/items?after=2"}]
    fetch, sent = pages_of(bodies, count=lambda body: 1)
    run(paginate.NextUrl("next"), fetch)
    assert [r.url for r in sent] == [None, "http://api.test/v1/items?after=2", "http://api.test/v1/items?after=4"]


def test_link_header_rel_next_is_followed_until_there_is_none() -> None:
    headers = [{"Link": '<http://api.test/x?page=2>; rel="next", <http://api.test/x?page=9>; rel="last"'},
               {"Link": '<http://api.test/x?page=1>; rel="prev"'}]
    fetch, sent = pages_of([[1], [2], [3]], headers=headers)
    run(paginate.LinkHeader(), fetch)
    assert [r.url for r in sent] == [None, "http://api.test/x?page=2"]


def test_time_windows_advance_to_the_end_like_binance_klines() -> None:
    fetch, sent = pages_of([[1]] * 10)
    run(paginate.TimeWindow("startTime", "endTime", 1000, start=0, end=2500), fetch)
    assert [(r.params["startTime"], r.params["endTime"]) for r in sent] == [(0, 999), (1000, 1999), (2000, 2500)]


def test_time_windows_end_now_when_no_end_is_set_and_ask_nothing_past_it() -> None:
    fetch, sent = pages_of([[1]] * 10)
    run(paginate.TimeWindow("from", "to", 60, start=100, unit="s", now=lambda: 200), fetch)
    assert [r.params["from"] for r in sent] == [100, 160]
    fetch, sent = pages_of([])
    assert run(paginate.TimeWindow("from", "to", 60, start=300, unit="s", now=lambda: 200), fetch) == []


def test_max_pages_is_a_hard_stop_for_every_paginator() -> None:
    endless = [
        (paginate.PageNumber("page"), lambda i: [i]),
        (paginate.OffsetLimit("o", "l", 1), lambda i: [i]),
        (paginate.BodyCursor("next", "c"), lambda i: {"next": i}),
        (paginate.NextUrl("next"), lambda i: {"next": f"/p{i}"}),
        (paginate.TimeWindow("s", "e", 1, start=0, end=10**9), lambda i: [i]),
    ]
    for paginator, body in endless:
        fetch, sent = pages_of([body(i) for i in range(1, 100)], count=lambda b: 1)
        run(paginator, fetch, max_pages=3)
        assert len(sent) == 3, paginator


def test_value_at_reads_dotted_paths_and_list_indexes() -> None:
    body = {"a": {"b": [{"c": 1}]}}
    assert paginate.value_at(body, "a.b.0.c") == 1
    assert paginate.value_at(body, "a.x.c") is None
    assert paginate.value_at(body, "") is body


# A listing as an API pages it: page sizes (0 for an empty page), and where the API hands back a cursor it
# already gave (a repeat) instead of the next one.
listings = st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(sizes=listings, repeat_at=st.one_of(st.none(), st.integers(min_value=0, max_value=11)),
       max_pages=st.integers(min_value=1, max_value=20))
def test_every_record_is_read_once_and_the_walk_ends(sizes: list[int], repeat_at: int | None, max_pages: int) -> None:
    # Page n holds records n*10 .. n*10+size-1 and the cursor of page n+1 (none on the last page); at
    # `repeat_at` the API hands back the cursor it gave before instead.
    def body(n: int) -> dict[str, Any]:
        cursor = None if n + 1 >= len(sizes) else f"c{n + 1}"
        if repeat_at is not None and n == repeat_at and n > 0:
            cursor = f"c{n}"
        return {"items": [n * 10 + i for i in range(sizes[n])], "next": cursor}

    calls: list[int] = []

    def fetch(request: Request) -> Response:
        n = int(str(request.params.get("cursor", "c0"))[1:])
        calls.append(n)
        assert len(calls) <= max_pages  # never asked past the hard stop
        page = body(n)
        return Response(page, {}, len(page["items"]))

    read = [r for _, response in walk(paginate.BodyCursor("next", "cursor"), fetch, max_pages)
            for r in response.body["items"]]
    assert len(read) == len(set(read))  # nothing read twice
    reachable = min(len(sizes), max_pages, repeat_at + 1 if repeat_at else len(sizes))
    assert read == [n * 10 + i for n in range(reachable) for i in range(sizes[n])]  # everything reachable, in order


@settings(max_examples=200, deadline=None)
@given(full_pages=st.integers(min_value=0, max_value=8), last=st.integers(min_value=0, max_value=3),
       max_pages=st.integers(min_value=1, max_value=12))
def test_page_numbers_read_every_record_once_up_to_a_short_or_empty_last_page(full_pages: int, last: int,
                                                                              max_pages: int) -> None:
    size = 4
    listing = [list(range(n * size, n * size + size)) for n in range(full_pages)] + [
        list(range(full_pages * size, full_pages * size + last))]

    def fetch(request: Request) -> Response:
        number = request.params["page"]
        page = listing[number - 1] if number <= len(listing) else []
        return Response(page, {}, len(page))

    read = [r for _, response in walk(paginate.PageNumber("page", 1, size), fetch, max_pages) for r in response.body]
    assert read == list(range(min(full_pages * size + last, max_pages * size)))
