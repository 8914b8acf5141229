"""Send the hostile bodies of the `drip`, `endless`, `short_body`, `huge_body` and `gzip_bomb` faults.

Each writer stops when its time is up, when the server stops, or when the client goes away
(a write then fails, or times out after the handler's socket timeout), so no fault holds a
server thread longer than its capped `seconds` or `hold`.
"""
from __future__ import annotations

import math
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler
from typing import Any

JSON_TYPE = "application/json; charset=utf-8"
FILLER = b"0," * 32768  # 64 KiB of a JSON array that never closes


def send_hostile(handler: BaseHTTPRequestHandler, kind: str, params: dict[str, Any], payload: bytes,
                 stopping: threading.Event) -> None:
    """Answer 200 with the hostile body `kind` asks for, until it ends or the client leaves."""
    handler.close_connection = True
    try:
        if kind == "drip":
            _drip(handler, payload, float(params["interval"]), int(params["size"]), float(params["seconds"]),
                  stopping)
        elif kind == "gzip_bomb":
            _gzip_bomb(handler, int(params["inflated"]), stopping)
        elif kind == "short_body":
            _start(handler, int(params["declared"]))
            handler.wfile.write(payload)
            stopping.wait(float(params["hold"]))  # the rest never comes; the client must stop waiting
        else:
            declared = int(params["declared"]) if kind == "huge_body" else None
            _flood(handler, declared, float(params["seconds"]), stopping)
    except OSError:
        pass  # the client gave up, which is what the fault is there to prove


def _start(handler: BaseHTTPRequestHandler, length: int | None) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", JSON_TYPE)
    if length is not None:
        handler.send_header("Content-Length", str(length))
    handler.end_headers()


def _gzip_bomb(handler: BaseHTTPRequestHandler, inflated: int, stopping: threading.Event) -> None:
    """Send `inflated` zero bytes gzip-compressed, compressing as it goes, so the server holds only a chunk."""
    handler.send_response(200)
    handler.send_header("Content-Type", JSON_TYPE)
    handler.send_header("Content-Encoding", "gzip")
    handler.end_headers()
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip header and trailer
    zeros = bytes(1 << 20)
    for start in range(0, inflated, len(zeros)):
        if stopping.is_set():
            return
        handler.wfile.write(packer.compress(zeros[:inflated - start]))
    handler.wfile.write(packer.flush())


def _drip(handler: BaseHTTPRequestHandler, payload: bytes, interval: float, size: int, seconds: float,
          stopping: threading.Event) -> None:
    _start(handler, len(payload))
    ends = time.monotonic() + seconds
    for start in range(0, len(payload), size):
        if stopping.wait(interval) or time.monotonic() >= ends:
            return
        handler.wfile.write(payload[start:start + size])


def _flood(handler: BaseHTTPRequestHandler, declared: int | None, seconds: float,
           stopping: threading.Event) -> None:
    """Send `[0,0,0,…` as fast as the client reads: `declared` bytes in all, or for ever without a length."""
    _start(handler, declared)
    ends = time.monotonic() + seconds
    limit = declared if declared is not None else math.inf
    sent = 0
    while sent < limit and not stopping.is_set() and time.monotonic() < ends:
        chunk = ((b"[" if not sent else b"") + FILLER)[:int(min(limit - sent, len(FILLER)))]
        handler.wfile.write(chunk)
        sent += len(chunk)
