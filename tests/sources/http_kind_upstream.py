"""A small local HTTP server for the http kind's tests: routes answer recorded-shape bodies, every request is kept."""
from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


# A route answers (status, headers, body); a body that is not bytes is sent as JSON.
Route = Callable[[Seen], tuple[int, dict[str, str], Any]]


@dataclass
class Upstream:
    """Routes by path, and the requests received, in order."""

    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    def json(self, path: str, answer: Callable[[Seen], Any]) -> None:
        """Answer `path` with the JSON `answer` gives for each request."""
        self.routes[path] = lambda seen: (200, {}, answer(seen))

    def requests(self, path: str) -> list[Seen]:
        """Return the requests received for `path`."""
        return [seen for seen in self.seen if seen.path == path]


class _Handler(BaseHTTPRequestHandler):
    upstream: Upstream

    def _answer(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        seen = Seen(self.command, parts.path, dict(parse_qsl(parts.query)), dict(self.headers.items()),
                    json.loads(raw) if raw else None)
        self.upstream.seen.append(seen)
        route = self.upstream.routes.get(parts.path)
        status, headers, body = route(seen) if route else (404, {}, {"error": "no route"})
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass  # quiet: the tests read `seen`


def serve() -> Iterator[Upstream]:
    """Run a server on a free port for the length of a test."""
    upstream = Upstream()
    handler = type("Handler", (_Handler,), {"upstream": upstream})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    upstream.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield upstream
    finally:
        server.shutdown()
        server.server_close()
