"""Check the X-API-Key header: always for writes, for reads only when READS_REQUIRE_KEY is set."""
from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, request

from kasparro.api.errors import ApiError

API_KEY_HEADER = "X-API-Key"
SECURITY_SCHEME = "ApiKeyAuth"
View = TypeVar("View", bound=Callable[..., Any])


def check_key() -> None:
    """Refuse the request unless it carries the configured API key."""
    expected = current_app.config.get("API_KEY")
    if not expected:
        # Never open: without a configured key nobody can call a protected endpoint.
        raise ApiError(503, "auth_not_configured", "this endpoint is disabled: the server has no API_KEY set")
    offered = request.headers.get(API_KEY_HEADER, "")
    if not hmac.compare_digest(offered.encode("utf-8", "surrogateescape"), expected.encode("utf-8")):
        raise ApiError(401, "unauthorized", f"a valid {API_KEY_HEADER} header is required",
                       headers={"WWW-Authenticate": f'ApiKey header="{API_KEY_HEADER}"'})


def key_required(view: View) -> View:
    """Require the API key on a view that changes state."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        check_key()
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def read_access(view: View) -> View:
    """Require the API key on a read view when the deployment asks for it."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_app.config.get("READS_REQUIRE_KEY"):
            check_key()
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
