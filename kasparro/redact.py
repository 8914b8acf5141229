"""Mask credentials in URLs and in text that may quote them, before they reach logs, tables or the API.

Both passes are linear in the length of the text, so callers redact the whole text first and truncate after:
truncating first could cut `user:password@` before its `@` and leave the start of the password unmasked.
"""
from __future__ import annotations

import re

REDACTED = "***"
# Query parameters whose values are secrets wherever they appear (api_key, x_cg_demo_api_key, token...).
SECRET_PARAM_HINTS = ("key", "token", "secret", "signature", "password", "auth")
# After "://": user:password@ — the password runs to the last "@" before the host, so an unescaped "@" in it
# is covered. Anchored at each "://" found by str.find, never tried at every word start: a scheme pattern
# (`\b[a-z][a-z0-9+.-]*://`) rescans every run of word characters once per word start, which is quadratic
# (160 KB of "a.a.a…" took 7 s). The span it reads ends at the first "/", so successive spans never overlap.
_USERINFO = re.compile(r"[^:/?#@\s]*:(?P<password>[^/?#\s]*)@")
_QUERY_PARAM = re.compile(r"(?P<head>[?&;](?P<name>[A-Za-z0-9_.\-\[\]]+)=)(?P<value>[^&#\s'\"]*)")


def _mask_param(match: re.Match[str]) -> str:
    if any(hint in match["name"].lower() for hint in SECRET_PARAM_HINTS) and match["value"]:
        return match["head"] + REDACTED
    return match[0]


def _mask_userinfo(text: str) -> str:
    """Mask the password of every `://user:password@` in `text`, whatever (if anything) precedes the `://`."""
    pieces: list[str] = []
    done = 0
    found = text.find("://")
    while found != -1:
        match = _USERINFO.match(text, found + 3)
        if match:
            pieces += [text[done:match.start("password")], REDACTED]
            done = match.end("password")
        found = text.find("://", found + 3)
    pieces.append(text[done:])
    return "".join(pieces)


def redact_text(text: str) -> str:
    """Mask URL passwords and secret-looking query values anywhere in `text`, in time linear in its length."""
    return _QUERY_PARAM.sub(_mask_param, _mask_userinfo(text))


def redact_url(url: str) -> str:
    """Return `url` with its password and secret query values masked, for display."""
    return redact_text(url)
