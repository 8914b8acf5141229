"""Give `requests` the two limits it lacks: a total deadline per request, and redirects that keep our keys home.

`requests` times out each socket read, not the request: a server that drips a
byte every few seconds keeps it reading for ever. A `Deadline` arms a timer
per attempt; every connection this session sends on registers its socket with
the deadline of the thread using it, and when the time is up the timer shuts
the socket down, which ends a blocked read at once (headers or body, any
hop of a redirect). The caller then sees `Deadline.expired` and says why.

`requests` drops `Authorization` on a redirect to another host, but forwards
every other header, so a provider key sent as `x-cg-demo-api-key` would reach
whatever host a redirect names. `KeyedSession` strips the source's credential
headers whenever a redirect leaves the origin (scheme, host and port) the
request was sent to.
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import ProxyManager

# Redirects a request may follow before it fails as misconfigured.
MAX_REDIRECTS = 5

_current = threading.local()


class Deadline:
    """Shut down every socket an attempt uses once `seconds` have passed since it began."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        _current.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        with self._lock:
            self._sockets.clear()  # the connection goes back to the pool; a late timer must not touch it
        _current.deadline = None

    def left(self) -> float:
        """Return the seconds left, never less than a millisecond (a socket timeout of 0 means non-blocking)."""
        return max(self.ends - time.monotonic(), 0.001)

    def watch(self, sock: socket.socket | None) -> None:
        """Register a socket the attempt reads from; shut it at once when the time is already up."""
        if sock is None:
            return
        with self._lock:
            if self.expired:
                _shut(sock)
            else:
                self._sockets.append(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        # The plain socket's shutdown, also for TLS: it wakes a reader blocked in another thread
        # without touching the TLS object that reader is using.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def _watch_current(sock: socket.socket | None) -> None:
    deadline: Deadline | None = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.watch(sock)


class _WatchedHTTPConnection(HTTPConnection):
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        _watch_current(self.sock)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        _watch_current(self.sock)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        # Through an HTTP(S)_PROXY too; a SOCKS proxy keeps its own pools, bounded by the read timeout only.
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if isinstance(manager, ProxyManager):
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


def origin(url: str) -> tuple[str, str, int | None]:
    """Return a URL's scheme, host and port (the default port spelled out)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)


class KeyedSession(requests.Session):
    """A session that never sends its credential headers to another origin, and reads under a `Deadline`."""

    def __init__(self, credential_headers: Iterable[str] = ()) -> None:
        super().__init__()
        self.credential_headers = tuple(credential_headers)
        self.max_redirects = MAX_REDIRECTS
        for prefix in ("http://", "https://"):
            self.mount(prefix, _WatchedAdapter())

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        """Drop `Authorization` and our credential headers when a redirect leaves the origin."""
        super().rebuild_auth(prepared_request, response)
        if origin(str(response.request.url)) != origin(str(prepared_request.url)):
            for name in ("Authorization", *self.credential_headers):
                prepared_request.headers.pop(name, None)
