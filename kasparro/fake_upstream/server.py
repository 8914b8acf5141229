"""Offline stand-in for market HTTP APIs (CoinPaprika, CoinGecko, and the `.venues`) and news feeds, stdlib only.

For demos and tests only: never run it where untrusted clients can reach it, nor in production. Its
`/__admin/*` endpoints rewrite what it serves, so they need a bearer token (see `.admin`); request
bodies need a valid Content-Length, the request log keeps only the last REQUEST_LOG_SIZE entries, and
every fault that takes time is capped (see `.faults`).
"""
from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .admin import MAX_ADMIN_BODY_BYTES, admin_refusal, content_length, parse_admin_body
from .faults import HTML_ERROR_PAGE, PROVIDERS, FaultQueue, make_fault
from .feeds import Feeds
from .hostile import send_hostile
from .providers import (PREFIXES, SECRET_PARAMS, check_gecko_auth, check_paprika_auth,
                        error_body, gecko_route, paprika_route, split_provider)
from .snapshots import SnapshotSeries, load_coingecko, load_coinpaprika
from .venues import drift_body, load_venues

log = logging.getLogger("kasparro.fake_upstream")
JSON_TYPE = "application/json; charset=utf-8"
# Requests kept for `/__admin/requests`; older ones fall off, so a long demo cannot fill memory.
REQUEST_LOG_SIZE = 10_000
HOSTILE = frozenset({"drip", "endless", "short_body", "huge_body", "gzip_bomb"})


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """Return the payload directory, defaulting to the repository's data/upstream."""
    if data_dir is not None:
        return Path(data_dir)
    cwd_default = Path("data/upstream")
    if cwd_default.is_dir():
        return cwd_default
    # Fall back to the copy shipped next to the package so it works from any directory.
    return Path(__file__).resolve().parents[2] / "data" / "upstream"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    upstream: FakeUpstream


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "FakeUpstream/1.0"
    # Seconds a socket read or write may block: a client that stalls cannot hold a thread for ever.
    timeout = 30

    def do_GET(self) -> None:  # noqa: N802 - name fixed by http.server
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # The default line includes the query string, which may carry an API key.
        return

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        upstream = self.server.upstream
        length = content_length(self.headers)
        if length is None:
            self.close_connection = True  # the body's end is unknown, so the connection cannot be reused
            self._send(400, json.dumps({"error": "invalid Content-Length"}).encode(), JSON_TYPE)
            return
        if parts.path.startswith("/__admin/"):
            self._serve_admin(method, parts.path, length)
            return
        if parts.path.startswith("/rss/"):
            upstream._serve_feed(self, method, parts.path)
            return
        upstream._serve(self, method, parts.path, query)

    def _serve_admin(self, method: str, path: str, length: int) -> None:
        refused = admin_refusal(self.headers, self.server.upstream.admin_token, length)
        # Read a bounded body even when refusing, so closing with it unread cannot reset the answer away.
        raw = self.rfile.read(length) if length <= MAX_ADMIN_BODY_BYTES else b""
        if refused is not None:
            self.close_connection = True
            status, body = refused
        else:
            status, body = self.server.upstream._admin(method, path, parse_admin_body(raw))
        self._send(status, json.dumps(body).encode(), JSON_TYPE)
        log.info("%s %s %d", method, path, status)

    def _send(self, status: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # The client gave up (for example after a slow fault); nothing to do.


class FakeUpstream:
    """Serve recorded CoinPaprika and CoinGecko payloads with scriptable faults and auth."""

    def __init__(self, data_dir: str | Path | None = None, coinpaprika_key: str | None = None,
                 coingecko_key: str | None = None, coingecko_plan: str = "demo",
                 advance_every: float | None = None, admin_token: str | None = None) -> None:
        if coingecko_plan not in ("demo", "pro"):
            raise ValueError("coingecko_plan must be 'demo' or 'pro'")
        self.data_dir = resolve_data_dir(data_dir)
        self.coinpaprika_key = coinpaprika_key
        self.coingecko_key = coingecko_key
        self.coingecko_plan = coingecko_plan
        self.advance_every = advance_every
        # None makes a random token: in-process callers read it here, nobody else can guess it.
        self.admin_token = admin_token or secrets.token_urlsafe(24)
        self._lock = threading.RLock()
        self._series: dict[str, SnapshotSeries] = {
            "coinpaprika": load_coinpaprika(self.data_dir),
            "coingecko": load_coingecko(self.data_dir),
        }
        self.feeds = Feeds(self.data_dir)
        self.venues = load_venues(self.data_dir)
        self._faults = FaultQueue()
        self._requests: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
        self._httpd: _HTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.base_url = ""

    # --- lifecycle -------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start serving in background threads and return the base URL."""
        if self._httpd is not None:
            return self.base_url
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.upstream = self
        self.base_url = f"http://{host}:{self._httpd.server_address[1]}"
        self._stopping.clear()
        serve = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                 name="fake-upstream", daemon=True)
        self._threads = [serve]
        if self.advance_every:
            self._threads.append(threading.Thread(target=self._auto_advance,
                                                  name="fake-upstream-timer", daemon=True))
        for thread in self._threads:
            thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def __enter__(self) -> FakeUpstream:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _auto_advance(self) -> None:
        assert self.advance_every
        while not self._stopping.wait(self.advance_every):
            self.advance()

    # --- control ---------------------------------------------------------------
    @property
    def coinpaprika_url(self) -> str:
        """Return the base URL to configure as the CoinPaprika API root."""
        return self.base_url + PREFIXES["coinpaprika"]

    @property
    def coingecko_url(self) -> str:
        """Return the base URL to configure as the CoinGecko API root."""
        return self.base_url + PREFIXES["coingecko"]

    def url(self, provider: str) -> str:
        """Return the base URL to configure as `provider`'s API root (the real one's host part replaced)."""
        return self.base_url + PREFIXES[provider]

    @property
    def admin_headers(self) -> dict[str, str]:
        """Return the headers an admin request needs."""
        return {"Authorization": f"Bearer {self.admin_token}"}

    def rss_url(self, name: str) -> str:
        """Return the URL of the recorded feed `name` (see kasparro.fake_upstream.feeds)."""
        return f"{self.base_url}/rss/{name}"

    def advance(self, provider: str | None = None) -> dict[str, Any]:
        """Move one provider (or all; "rss" for the live news feed) to its next snapshot and return the new state."""
        if provider is not None and provider not in (*PROVIDERS, "rss"):
            raise ValueError(f"unknown provider {provider!r}; expected one of {PROVIDERS} or 'rss'")
        with self._lock:
            for name, series in self._series.items():
                if provider in (None, name):
                    series.advance()
            for name, venue in self.venues.items():
                if provider in (None, name):
                    venue.advance()
            if provider in (None, "rss"):
                self.feeds.advance()
            return self.state()

    def reset(self) -> dict[str, Any]:
        """Rewind every provider to snapshot 0 and clear faults and the request log."""
        with self._lock:
            for series in self._series.values():
                series.index = 0
            for venue in self.venues.values():
                venue.reset()
            self.feeds.step = 0
            self._requests.clear()
        self._faults.clear()
        return self.state()

    def inject(self, provider: str, kind: str | int, times: int = 1,
               **params: Any) -> dict[str, Any]:
        """Queue a fault for the next `times` matching requests to `provider`."""
        fault = make_fault(provider, kind, times, **params)
        self._faults.add(fault)
        return fault.to_dict()

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        self._faults.clear()

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Return a copy of the upstream request log (admin calls excluded)."""
        with self._lock:
            return [dict(r) for r in self._requests]

    def state(self) -> dict[str, Any]:
        """Return current snapshots and queued faults."""
        with self._lock:
            providers = {name: s.describe() for name, s in self._series.items()}
            venues = {name: v.describe() for name, v in self.venues.items()}
        return {"providers": providers, "venues": venues, "feeds": {"names": self.feeds.names(), "live_step": self.feeds.step},
                "faults": self._faults.snapshot()}

    # --- request handling ------------------------------------------------------
    def _admin(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        body = body if isinstance(body, dict) else {}
        if body.get("__invalid__"):
            return 400, {"error": "request body is not valid JSON"}
        routes = {
            ("POST", "/__admin/advance"): lambda: (200, self.advance(body.get("provider"))),
            ("POST", "/__admin/reset"): lambda: (200, self.reset()),
            ("GET", "/__admin/state"): lambda: (200, self.state()),
            ("POST", "/__admin/faults"): lambda: (201, {"queued": self.inject(**body),
                                                        "faults": self._faults.snapshot()}),
            ("DELETE", "/__admin/faults"): self._admin_clear_faults,
            ("GET", "/__admin/requests"): lambda: (200, self.requests),
        }
        action = routes.get((method, path))
        if action is None:
            known = any(p == path for _, p in routes)
            return (405, {"error": "method not allowed"}) if known else (404, {"error": "not found"})
        try:
            return action()
        except (TypeError, ValueError) as exc:
            return 400, {"error": str(exc)}

    def _admin_clear_faults(self) -> tuple[int, Any]:
        self.clear_faults()
        return 200, {"faults": []}

    def _check_auth(self, provider: str, handler: _Handler,
                    query: dict[str, str]) -> tuple[int, Any] | None:
        if provider == "coinpaprika":
            return check_paprika_auth(self.coinpaprika_key, handler.headers)
        if provider == "coingecko":
            return check_gecko_auth(self.coingecko_key, self.coingecko_plan, handler.headers, query)
        return None  # the venues' market-data endpoints are public

    def _serve(self, handler: _Handler, method: str, path: str, query: dict[str, str]) -> None:
        entry: dict[str, Any] = {
            "monotonic": time.monotonic(), "wall": time.time(), "method": method, "path": path,
            "query": {k: ("***" if k in SECRET_PARAMS else v) for k, v in query.items()},
            "provider": None, "status": None, "auth_ok": None, "fault": None, "snapshot_id": None,
        }
        provider, endpoint = split_provider(path)
        entry["provider"] = provider
        fault = None
        if provider is None:
            status, body = 404, {"error": "not found"}
        elif method != "GET":
            status, body = 405, {"error": "method not allowed"}
        else:
            denied = self._check_auth(provider, handler, query)
            entry["auth_ok"] = denied is None
            if denied is not None:
                status, body = denied
            else:
                status, body = self._route(provider, endpoint, query, entry)
                # Faults only replace answers that would have succeeded, so a rejected
                # request never uses up a fault a test queued for a later call.
                venue = self.venues.get(provider)
                if status == 200 and not (venue and venue.failed(body)):
                    fault = self._faults.take(provider, path)
        entry["fault"] = fault.kind if fault else None
        self._respond(handler, entry, status, body, fault)

    def _route(self, provider: str, endpoint: str, query: dict[str, str],
               entry: dict[str, Any]) -> tuple[int, Any]:
        with self._lock:
            if provider in self.venues:
                return self.venues[provider].route(endpoint, query)
            if provider not in self._series:
                return 404, {"error": f"no recorded {provider} payloads in this data directory"}
            series = self._series[provider]
            entry["snapshot_id"] = series.current.id
            route = paprika_route if provider == "coinpaprika" else gecko_route
            return route(endpoint, query, series)

    def _serve_feed(self, handler: _Handler, method: str, path: str) -> None:
        with self._lock:
            found = self.feeds.body(path[len("/rss/"):]) if method == "GET" else None
            status = 200 if found else (404 if method == "GET" else 405)
            self._requests.append({"monotonic": time.monotonic(), "wall": time.time(), "method": method,
                                   "path": path, "query": {}, "provider": "rss", "status": status,
                                   "auth_ok": None, "fault": None, "snapshot_id": None})
        if found is None:
            error = {"error": "not found" if status == 404 else "method not allowed"}
            handler._send(status, json.dumps(error).encode(), JSON_TYPE)
        else:
            handler._send(200, *found)
        log.info("%s %s %d", method, path, status)

    def _respond(self, handler: _Handler, entry: dict[str, Any], status: int, body: Any,
                 fault: Any) -> None:
        kind = fault.kind if fault else None
        headers: dict[str, str] = {}
        content_type = JSON_TYPE
        if kind == "slow":
            self._stopping.wait(float(fault.params["delay"]))
        venue = self.venues.get(entry["provider"])
        if kind in ("429", "500", "503"):
            status = int(kind)
            body = venue.error_body(status) if venue else error_body(entry["provider"], status)
            if kind == "429":
                headers["Retry-After"] = str(fault.params["retry_after"])
        elif kind:
            body = drift_body(venue, kind, fault.params, body)
        payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        if kind == "truncated":
            payload = payload[: max(1, len(payload) // 2)]
        elif kind == "html":
            payload, content_type = HTML_ERROR_PAGE.encode("utf-8"), "text/html; charset=utf-8"
        entry["status"] = None if kind == "reset" else status
        with self._lock:
            self._requests.append(entry)
        if kind in HOSTILE:
            send_hostile(handler, kind, fault.params, payload, self._stopping)
            log.info("%s %s %d fault=%s", entry["method"], entry["path"], status, kind)
            return
        if kind == "reset":
            # Drop the connection without a status line, like a peer reset mid-request.
            handler.close_connection = True
            log.info("%s %s reset", entry["method"], entry["path"])
            return
        handler._send(status, payload, content_type, headers)
        log.info("%s %s %d%s", entry["method"], entry["path"], status,
                 f" fault={kind}" if kind else "")
