"""A refused request quotes the start of the body, and never the start of a password the cut fell inside."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kasparro.errors import SourceConfigError
from kasparro.sources.base import RequestStats
from kasparro.sources.http import SNIPPET_CHARS, HttpClient

PASSWORD = "Zq7Wv3Kp9Lm2Xr8T"


class _Body(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        self.send_response(400)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A local server answering 400 with whatever body _Body.body holds."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Body)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def test_a_body_quoting_a_password_wherever_the_cut_falls_shows_none_of_it(server: str) -> None:
    client = HttpClient("snippets", RequestStats(), timeout=2)
    quoted = f" see https://mirror:{PASSWORD}@status.example/ for status"
    # Every place the snippet's cut can fall in the quoted URL, and the places around them.
    for before in range(SNIPPET_CHARS - len(quoted) - 5, SNIPPET_CHARS + 5):
        _Body.body = ("x" * before + quoted).encode()

        with pytest.raises(SourceConfigError) as refused:
            client.get_json(server)

        message = str(refused.value)
        assert "HTTP 400" in message
        assert not any(PASSWORD[:n] in message for n in range(4, len(PASSWORD) + 1)), (before, message)
