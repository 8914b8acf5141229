"""The http kind's auth: the secret, always named by an environment variable, is sent exactly as declared and
never appears in logs or errors."""
from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kasparro.errors import PayloadError, SourceConfigError
from kasparro.sources import SourceContext, build_source

from .conftest import FAST_RPM
from .http_kind_upstream import Seen, Upstream, serve

ContextFactory = Callable[..., SourceContext]


@pytest.fixture
def api() -> Iterator[Upstream]:
    yield from serve()


def keyed(api: Upstream, context: SourceContext, auth: dict[str, Any], **extra: Any) -> Any:
    spec = {"kind": "http", "requests_per_minute": FAST_RPM, "base_url": api.url, "path": "/quotes",
            "records_path": "data", "api_key_env": "VENUE_API_KEY", "auth": auth, "max_retries": 0,
            "fields": {"source_asset_id": "id", "observed_at": "at", "price_usd": "p"}, **extra}
    return build_source("venue", spec, context)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def quotes(seen: Seen) -> dict[str, Any]:
    return {"data": [{"id": "bitcoin", "at": "2023-07-06T00:00:00Z", "p": 1}]}


@pytest.mark.parametrize(("auth", "sent"), [
    ({"type": "header", "name": "X-API-Key"}, lambda seen, key: seen.headers.get("X-API-Key") == key),
    ({"type": "bearer"}, lambda seen, key: seen.headers.get("Authorization") == f"Bearer {key}"),
    ({"type": "query", "name": "apikey"}, lambda seen, key: seen.query.get("apikey") == key),
    ({"type": "basic", "username": "reader"},
     lambda seen, key: seen.headers.get("Authorization") == "Basic " + b64(f"reader:{key}")),
])
def test_the_secret_is_sent_exactly_as_declared_and_logged_nowhere(api: Upstream, make_context: ContextFactory,
                                                                   api_key: str, caplog: pytest.LogCaptureFixture,
                                                                   auth: dict[str, Any],
                                                                   sent: Callable[[Seen, str], bool]) -> None:
    api.json("/quotes", quotes)
    caplog.set_level(logging.DEBUG)
    source = keyed(api, make_context({"VENUE_API_KEY": api_key}), auth)
    assert len(list(source.pages(None, 10))) == 1
    assert sent(api.seen[0], api_key)
    # Sent in that one place only.
    basic = b64(f"reader:{api_key}")
    places = [k for k, v in {**api.seen[0].headers, **api.seen[0].query}.items() if api_key in v or basic in v]
    assert len(places) == 1
    assert caplog.records and api_key not in caplog.text


@pytest.mark.parametrize("auth", [{"type": "query", "name": "token"}, {"type": "query", "name": "auth"},
                                  {"type": "bearer"}, {"type": "basic", "username": "reader"}])
def test_an_error_never_shows_the_secret(api: Upstream, make_context: ContextFactory, api_key: str,
                                         caplog: pytest.LogCaptureFixture, auth: dict[str, Any]) -> None:
    # The provider echoes the request, secret and all, in its refusal.
    api.routes["/quotes"] = lambda seen: (400, {}, {"error": f"bad request {seen.query} {seen.headers}"})
    caplog.set_level(logging.DEBUG)
    source = keyed(api, make_context({"VENUE_API_KEY": api_key}), auth)
    with pytest.raises(SourceConfigError) as refused:
        list(source.pages(None, 10))
    assert "HTTP 400" in str(refused.value) and api_key not in str(refused.value)
    assert api_key not in caplog.text


def test_an_answer_reporting_an_error_never_shows_a_query_secret(api: Upstream, make_context: ContextFactory,
                                                                 api_key: str) -> None:
    api.json("/quotes", lambda seen: {"error": ["EAPI:Invalid key"], "data": []})
    source = keyed(api, make_context({"VENUE_API_KEY": api_key}), {"type": "query", "name": "auth"},
                   error_path="error")
    with pytest.raises(PayloadError, match="EAPI:Invalid key") as failed:
        list(source.pages(None, 10))
    assert api_key not in str(failed.value) and "auth=***" in str(failed.value)


def test_an_unset_secret_calls_without_one_and_names_the_variable(api: Upstream, make_context: ContextFactory,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    api.json("/quotes", quotes)
    source = keyed(api, make_context({}), {"type": "bearer"})
    list(source.pages(None, 10))
    assert "Authorization" not in api.seen[0].headers
    assert "VENUE_API_KEY (api_key_env) is not set" in caplog.text
