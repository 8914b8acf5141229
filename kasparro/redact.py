"""Mask credentials in URLs and in text that may quote them, before they reach logs, tables or the API."""
from __future__ import annotations

import re

REDACTED = "***"
# Query parameters whose values are secrets wherever they appear (api_key, x_cg_demo_api_key, token...).
SECRET_PARAM_HINTS = ("key", "token", "secret", "signature", "password", "auth")
# scheme://user:password@ — the password runs to the last "@" before the host, so an unescaped "@" in it is covered.
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/?#@\s]*):(?P<password>[^/?#\s]*)@")
_QUERY_PARAM = re.compile(r"(?P<head>[?&;](?P<name>[A-Za-z0-9_.\-\[\]]+)=)(?P<value>[^&#\s'\"]*)")


def _mask_param(match: re.Match[str]) -> str:
    if any(hint in match["name"].lower() for hint in SECRET_PARAM_HINTS) and match["value"]:
        return match["head"] + REDACTED
    return match[0]


def redact_text(text: str) -> str:
    """Mask URL passwords and secret-looking query values anywhere in `text`."""
    text = _USERINFO.sub(lambda m: f"{m['head']}:{REDACTED}@", text)
    return _QUERY_PARAM.sub(_mask_param, text)


def redact_url(url: str) -> str:
    """Return `url` with its password and secret query values masked, for display."""
    return redact_text(url)
