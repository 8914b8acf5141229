"""A source's key never follows a redirect to another origin (scheme, host or port); same-origin redirects keep it."""
from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kasparro.errors import SourceAuthError
from kasparro.sources import SourceContext, build_source

from .conftest import FAST_RPM

ContextFactory = Callable[..., SourceContext]
KEY = "cg-redirect-secret-key"
COIN = {"id": "bitcoin", "symbol": "btc", "name": "Bitcoin", "last_updated": "2026-04-17T02:00:00.000Z",
        "current_price": 1.0, "market_cap": 1.0, "total_volume": 1.0, "price_change_percentage_24h": 0.0}


class Recorder:
    """A local HTTP server that records every request's headers and answers with `answer(path)`."""

    def __init__(self, answer: Callable[[str], tuple[int, dict[str, str], bytes]]) -> None:
        self.seen: list[dict[str, Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - name fixed by http.server
                recorder.seen.append({"path": self.path, "headers": dict(self.headers.items())})
                status, headers, body = answer(self.path)
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def saw_key(self) -> bool:
        return KEY in json.dumps(self.seen)


def listing(path: str) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps([COIN]).encode()


@pytest.fixture
def elsewhere() -> Iterator[Recorder]:
    """The host a redirect points to: it must never see the key."""
    server = Recorder(listing)
    yield server
    server.stop()


def redirecting_to(target: str) -> Recorder:
    """A server answering every request with a redirect to the same path on `target`."""
    return Recorder(lambda path: (302, {"Location": target + path}, b""))


@pytest.fixture
def provider(elsewhere: Recorder) -> Iterator[Recorder]:
    """The configured provider host: it answers every request with a redirect to `elsewhere`, another port."""
    server = redirecting_to(elsewhere.url)
    yield server
    server.stop()


def keyed_gecko(base_url: str, make_context: ContextFactory) -> Any:
    spec = {"kind": "coingecko", "base_url": base_url, "per_page": 5, "max_pages": 1,
            "requests_per_minute": FAST_RPM, "api_key_env": "CG_KEY", "max_retries": 0}
    return build_source("gecko", spec, make_context({"CG_KEY": KEY}))


def test_a_redirect_to_another_port_never_carries_the_key(provider: Recorder, elsewhere: Recorder,
                                                          make_context: ContextFactory) -> None:
    pages = list(keyed_gecko(provider.url, make_context).pages(None, 100))

    assert [item.payload["id"] for page in pages for item in page.items] == ["bitcoin"]
    assert provider.seen[0]["headers"]["x-cg-demo-api-key"] == KEY  # the configured host gets it
    assert len(elsewhere.seen) == 1 and not elsewhere.saw_key()


def test_a_redirect_within_the_origin_keeps_the_key(make_context: ContextFactory) -> None:
    same: list[Recorder] = []
    server = Recorder(lambda path: listing(path) if path.startswith("/moved")
                      else (301, {"Location": same[0].url + "/moved" + path}, b""))
    same.append(server)
    try:
        pages = list(keyed_gecko(server.url, make_context).pages(None, 100))
    finally:
        server.stop()

    assert len(pages) == 1
    assert [entry["headers"].get("x-cg-demo-api-key") for entry in server.seen] == [KEY, KEY]


def test_a_refusal_after_a_cross_origin_redirect_says_the_key_stayed_behind(
        elsewhere: Recorder, make_context: ContextFactory) -> None:
    refusing = Recorder(lambda path: (401, {"Content-Type": "application/json"}, b'{"error": "no key"}'))
    bouncer = redirecting_to(refusing.url)
    try:
        with pytest.raises(SourceAuthError, match="redirected to http://127.0.0.1:.*credentials not sent there"):
            list(keyed_gecko(bouncer.url, make_context).pages(None, 100))
    finally:
        bouncer.stop()
        refusing.stop()
    assert not refusing.saw_key()
