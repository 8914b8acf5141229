"""Guard the fake upstream's `/__admin/*` endpoints: a bearer token, JSON bodies only, a bounded body.

The token comes from FAKE_UPSTREAM_ADMIN_TOKEN on the command line, or is passed to `FakeUpstream`
(which makes a random one when given none, so in-process tests read `admin_token`). Without a token
nobody can reach admin: a web page cannot forge the `Authorization` header (a cross-site form can send
only `text/plain` and the like, which is refused too), and another container cannot rewrite the data.
"""
from __future__ import annotations

import hmac
import json
import re
from email.message import Message
from typing import Any

ADMIN_TOKEN_ENV = "FAKE_UPSTREAM_ADMIN_TOKEN"
MAX_ADMIN_BODY_BYTES = 64 * 1024
_LENGTH = re.compile(r"[0-9]{1,18}")

Refusal = tuple[int, dict[str, str]]


def content_length(headers: Message) -> int | None:
    """Return the request's declared body length (0 when none), or None when it is not one valid number."""
    values = {value.strip() for value in headers.get_all("Content-Length") or []}
    if not values:
        return 0
    value = values.pop()
    return int(value) if not values and _LENGTH.fullmatch(value) else None


def admin_refusal(headers: Message, token: str, length: int) -> Refusal | None:
    """Return why an admin request is refused (bad token, body too large, not JSON), or None to serve it."""
    scheme, _, given = (headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return 401, {"error": f"admin needs 'Authorization: Bearer <token>' (the {ADMIN_TOKEN_ENV} token)"}
    if length > MAX_ADMIN_BODY_BYTES:
        return 413, {"error": f"admin bodies are at most {MAX_ADMIN_BODY_BYTES} bytes"}
    content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if (length or content_type) and content_type != "application/json":
        return 415, {"error": "admin bodies must be application/json"}
    return None


def parse_admin_body(raw: bytes) -> Any:
    """Return the JSON body (None when empty), or a marker the admin routes answer with 400."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {"__invalid__": True}
