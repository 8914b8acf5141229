"""Bound what a request body may cost before any parser reads it: its size and its JSON nesting depth.

Flask reads a body without limit unless `MAX_CONTENT_LENGTH` is set, and Python's json module recurses once
per level, so 200 KB of `[[[…` raised RecursionError inside the request parser (a 500). Both limits are
settings (`MAX_REQUEST_BYTES`, `MAX_REQUEST_DEPTH`) and both answers name them.
"""
from __future__ import annotations

import re
from itertools import accumulate

from flask import Flask, current_app, request

from kasparro.api.errors import ApiError

# A JSON string, escapes included: brackets inside one do not nest. Unambiguous, so matched in linear time.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_depth(body: bytes) -> int:
    """Return the deepest nesting of arrays and objects in `body`, read as JSON text, in linear time."""
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    return max(accumulate(_STEP[b] for b in brackets), default=0)


def _check_body() -> None:
    size, most = request.content_length, current_app.config["MAX_REQUEST_BYTES"]
    if size is not None and size > most:
        raise ApiError(413, "payload_too_large", f"the request body is {size} bytes, over MAX_REQUEST_BYTES ({most})")
    if size is None and len(request.get_data(cache=True)) >= most and request.stream.read(1):
        # Sent without a length: werkzeug stops reading at MAX_CONTENT_LENGTH and would hand on the cut body.
        raise ApiError(413, "payload_too_large", f"the request body is over MAX_REQUEST_BYTES ({most})")
    if not request.is_json:
        return
    # Cached, so the view's parser reads these same bytes; MAX_CONTENT_LENGTH bounds a body sent without a length.
    limit = current_app.config["MAX_REQUEST_DEPTH"]
    if json_depth(request.get_data(cache=True)) > limit:
        raise ApiError(400, "bad_request", f"the request body is nested deeper than MAX_REQUEST_DEPTH ({limit})")


def init_app(app: Flask) -> None:
    """Cap request bodies in bytes (413) and JSON bodies in depth (400), before any view parses them."""
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_REQUEST_BYTES"]
    app.before_request(_check_body)
