"""Slow, endless and lying answers end within request_deadline_seconds or max_response_bytes, as a clean source error.

The elapsed-time bounds are correctness bounds (the deadline plus a margin for a loaded machine), not speed
tests: without the deadline each of these answers holds the client for minutes or for ever.
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kasparro.errors import KasparroError, PayloadError, TransientSourceError
from kasparro.fake_upstream import FakeUpstream
from kasparro.sources.base import RequestStats
from kasparro.sources.http import HttpClient

from tests.bounded import MIB, run_bounded

from .conftest import DATA_DIR

DEADLINE = 1.0
# Room for a loaded machine: still under the 5 s per-read timeout, so only the deadline can end a drip in time.
MARGIN = 3.5
CAP = 256 * 1024
MARKETS = {"vs_currency": "usd", "per_page": 5}


def client(**options: object) -> HttpClient:
    """A client whose per-read timeout (5 s) is far longer than its deadline, so only the deadline can end a drip."""
    settings = {"timeout": 5.0, "max_retries": 0, "request_deadline_seconds": DEADLINE, "max_response_bytes": CAP,
                **options}
    return HttpClient("hostile", RequestStats(), **settings)  # type: ignore[arg-type]


def markets(fake: FakeUpstream) -> str:
    return fake.coingecko_url + "/coins/markets"


@pytest.fixture(scope="module")
def hostile() -> Iterator[FakeUpstream]:
    with FakeUpstream(DATA_DIR) as fake:
        yield fake


def timed_error(call: object) -> tuple[KasparroError, float]:
    started = time.monotonic()
    with pytest.raises(KasparroError) as caught:
        call()  # type: ignore[operator]
    return caught.value, time.monotonic() - started


def test_a_body_dripping_a_byte_every_50_ms_ends_at_the_deadline(hostile: FakeUpstream) -> None:
    hostile.inject("coingecko", "drip", interval=0.05, size=1)

    error, elapsed = timed_error(lambda: client().get_json(markets(hostile), MARKETS))

    assert isinstance(error, TransientSourceError) and "request_deadline_seconds (1s)" in str(error)
    assert elapsed < DEADLINE + MARGIN


def test_the_deadline_bounds_feeds_read_as_bytes_too(hostile: FakeUpstream) -> None:
    hostile.inject("coingecko", "drip", interval=0.05, size=1)

    error, elapsed = timed_error(lambda: client().get_bytes(markets(hostile) + "?vs_currency=usd", 5_000_000))

    assert isinstance(error, TransientSourceError) and "request_deadline_seconds" in str(error)
    assert elapsed < DEADLINE + MARGIN


def test_an_endless_body_stops_at_max_response_bytes(hostile: FakeUpstream) -> None:
    hostile.inject("coingecko", "endless")

    error, elapsed = timed_error(lambda: client(request_deadline_seconds=30).get_json(markets(hostile), MARKETS))

    assert isinstance(error, PayloadError) and f"more than {CAP} bytes" in str(error)
    assert "max_response_bytes" in str(error)
    assert elapsed < DEADLINE + MARGIN  # read to the cap, not to the 30 s deadline


def fetch_with_defaults(url: str) -> int:
    """Fetch `url` as a source does out of the box (default limits) and return how many items came back."""
    return len(HttpClient("hostile", RequestStats(), max_retries=0).get_json(url, MARKETS))


def test_an_endless_body_under_default_settings_ends_in_bounded_memory(hostile: FakeUpstream) -> None:
    hostile.inject("coingecko", "endless")

    outcome = run_bounded(f"{__name__}:fetch_with_defaults", markets(hostile), memory_mib=768, seconds=60)

    assert outcome.clean("PayloadError") and outcome.kind == "raised", str(outcome)
    assert "over the byte limit (max_response_bytes)" in outcome.message
    assert outcome.peak_bytes - outcome.baseline_bytes < 160 * MIB  # the 32 MiB default, read and copied


def test_a_gzip_bomb_stops_at_max_response_bytes_of_what_it_inflates_to(hostile: FakeUpstream) -> None:
    hostile.inject("coingecko", "gzip_bomb", inflated=2**30)

    outcome = run_bounded(f"{__name__}:fetch_with_defaults", markets(hostile), memory_mib=768, seconds=60)

    assert outcome.clean("PayloadError") and outcome.kind == "raised", str(outcome)
    assert "more than 33554432 bytes, over the byte limit (max_response_bytes)" in outcome.message
    assert outcome.peak_bytes - outcome.baseline_bytes < 160 * MIB


@pytest.mark.parametrize("kind", ["huge_body", "short_body"])
def test_a_huge_declared_length_is_refused_before_reading(hostile: FakeUpstream, kind: str) -> None:
    hostile.inject("coingecko", kind, declared=10**12)

    error, elapsed = timed_error(lambda: client().get_json(markets(hostile), MARKETS))

    assert isinstance(error, PayloadError)
    assert f"announced 1000000000000 bytes, over the {CAP} byte limit (max_response_bytes)" in str(error)
    assert elapsed < MARGIN


def test_a_body_shorter_than_its_length_and_held_open_ends_at_the_deadline(hostile: FakeUpstream) -> None:
    hostile.inject("coingecko", "short_body", declared=CAP - 1, hold=30)

    error, elapsed = timed_error(lambda: client().get_json(markets(hostile), MARKETS))

    assert isinstance(error, TransientSourceError) and "request_deadline_seconds" in str(error)
    assert elapsed < DEADLINE + MARGIN


def dripping(first_bytes: bytes) -> Iterator[int]:
    """Serve one connection with `first_bytes` a byte every 50 ms, and yield the port."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for byte in first_bytes:
                if stop.wait(0.05):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    listener.close()
    thread.join(timeout=5)


@pytest.fixture
def header_drip() -> Iterator[str]:
    """A server that sends its status line one byte every 50 ms: the headers themselves never end."""
    for port in dripping(b"HTTP/1.1 200 OK\r\nX-Padding: " + b"x" * 10_000):
        yield f"http://127.0.0.1:{port}/slow"


@pytest.fixture
def handshake_drip() -> Iterator[str]:
    """A server whose TLS ServerHello record (16 KiB announced) comes a byte every 50 ms."""
    for port in dripping(b"\x16\x03\x03\x40\x00" + b"\x02" * 16_384):
        yield f"https://127.0.0.1:{port}/slow"


def test_a_tls_handshake_dripping_for_ever_ends_at_the_deadline(handshake_drip: str) -> None:
    # Python bounds a whole handshake by the socket timeout, which the client sets to the time left.
    error, elapsed = timed_error(lambda: client().get_json(handshake_drip))

    assert isinstance(error, TransientSourceError) and "request_deadline_seconds" in str(error)
    assert elapsed < DEADLINE + MARGIN


def test_headers_dripping_for_ever_end_at_the_deadline(header_drip: str) -> None:
    error, elapsed = timed_error(lambda: client().get_json(header_drip))

    assert isinstance(error, TransientSourceError) and "request_deadline_seconds" in str(error)
    assert elapsed < DEADLINE + MARGIN


HOSTILE_FAULTS = st.one_of(
    st.fixed_dictionaries({"kind": st.just("drip"), "interval": st.floats(0.001, 0.3),
                           "size": st.integers(1, 4096)}),
    st.fixed_dictionaries({"kind": st.just("endless")}),
    st.fixed_dictionaries({"kind": st.just("gzip_bomb"), "inflated": st.integers(0, 2**28)}),
    st.fixed_dictionaries({"kind": st.just("huge_body"), "declared": st.integers(0, 10**13)}),
    st.fixed_dictionaries({"kind": st.just("short_body"), "declared": st.integers(0, 10**13),
                           "hold": st.floats(0, 5)}),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fault=HOSTILE_FAULTS, cap=st.integers(1, 4 * 1024 * 1024))
def test_every_hostile_body_ends_as_a_clean_source_error_within_the_deadline(
        hostile: FakeUpstream, fault: dict, cap: int) -> None:
    hostile.clear_faults()
    hostile.inject("coingecko", **fault)
    started = time.monotonic()
    try:
        client(max_response_bytes=cap, request_deadline_seconds=0.5).get_json(markets(hostile), MARKETS)
    except (TransientSourceError, PayloadError) as exc:
        assert any(name in str(exc) for name in ("request_deadline_seconds", "max_response_bytes", "JSON",
                                                 "failed after 1 attempts"))
    assert time.monotonic() - started < 0.5 + MARGIN


def test_the_deadline_holds_through_an_http_proxy_that_drips(header_drip: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", header_drip.removesuffix("/slow"))

    error, elapsed = timed_error(lambda: client().get_json("http://provider.invalid/coins/markets"))

    assert isinstance(error, TransientSourceError) and "request_deadline_seconds" in str(error)
    assert elapsed < DEADLINE + MARGIN


@pytest.fixture(scope="module")
def raw_answer() -> Iterator[tuple[str, list[bytes]]]:
    """A server that answers each connection with the bytes last put in its list, then closes."""
    listener = socket.create_server(("127.0.0.1", 0))
    answer: list[bytes] = [b""]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(answer[0])

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/", answer
    listener.close()


LENGTHS = st.one_of(st.integers(-10**20, 10**20).map(str),
                    st.text("0123456789\u00b2\u00b3\u00b9", min_size=1, max_size=8),  # Latin-1 has digits int() refuses
                    st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF), min_size=1, max_size=30))


@settings(max_examples=60, deadline=None)
@given(length=LENGTHS)
def test_any_content_length_header_ends_in_a_body_or_a_clean_source_error(
        raw_answer: tuple[str, list[bytes]], length: str) -> None:
    url, answer = raw_answer
    answer[0] = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n[]".encode(
        "latin-1")
    try:
        client().get_json(url)
    except KasparroError:
        pass  # a clean source error; anything else escapes and fails the test
