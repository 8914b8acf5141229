"""The http kind's settings fail at start-up, in one line naming the key, when they cannot work."""
from __future__ import annotations

from typing import Any

import pytest

from kasparro.errors import SourceConfigError
from kasparro.sources import SourceContext, build_source

GOOD: dict[str, Any] = {
    "kind": "http", "base_url": "http://127.0.0.1:9/kraken", "path": "/0/public/OHLC",
    "params": {"pair": "{pair}", "since": "{since}"}, "each": {"pair": ["XXBTZUSD"]}, "records_path": "result",
    "columns": ["time", "open", "high", "low", "close"],
    "fields": {"source_asset_id": "$key", "observed_at": "time", "price_usd": "close"}, "times": {"observed_at": "s"},
}


def build(**changes: Any) -> Any:
    spec = {**GOOD, **changes}
    return build_source("venue", {k: v for k, v in spec.items() if v is not None}, SourceContext())


def test_the_good_settings_build() -> None:
    assert build().kind == "http"


@pytest.mark.parametrize(("changes", "message"), [
    ({"recordspath": "result"}, "unknown setting recordspath"),
    ({"paginate": {"type": "pages"}}, "paginate.type must be one of"),
    ({"paginate": {"type": "cursor", "cursor_param": "c"}}, "paginate type cursor needs paginate.next_cursor_path"),
    ({"paginate": {"type": "page", "page_param": "p", "size": 5}}, "unknown setting paginate.size"),
    ({"paginate": {"type": "offset", "offset_param": "o", "limit_param": "l", "limit": "100"}},
     "limit must be a whole number"),
    ({"paginate": {"type": "time", "start_param": "a", "end_param": "b", "window": 9, "start": 0, "unit": "h"}},
     "paginate.unit must be s or ms"),
    ({"paginate": {"type": "time", "start_param": "a", "end_param": "b", "window": 9, "start": 0},
      "incremental": {"unit": "s"}}, "incremental.unit 's' must be paginate.unit 'ms'"),
    ({"paginate": {"type": "cursor", "next_cursor_path": "a", "cursor_param": "b", "floor_from_checkpoint": True}},
     "floor_from_checkpoint needs [incremental]"),
    ({"auth": {"type": "bearer", "token": "sk-live-123"}, "api_key_env": "K"}, "auth.token: a secret is never written"),
    ({"auth": {"type": "header"}, "api_key_env": "K"}, "auth type header needs auth.name"),
    ({"auth": {"type": "bearer"}}, "auth type bearer needs api_key_env"),
    ({"auth": {"type": "oauth"}, "api_key_env": "K"}, "auth.type must be one of"),
    ({"api_key_env": "K"}, "api_key_env is set but [auth] does not say how"),
    ({"headers": {"X-API-Key": "sk-live-123"}}, "headers.X-API-Key looks like a secret written in sources.toml"),
    ({"params": {"pair": "{pair}", "api_key": "sk-live-123"}}, "params.api_key looks like a secret"),
    ({"params": {"pair": "{symbol}"}}, "params uses {symbol}, which is neither an each key nor since"),
    ({"each": {"pair": []}}, "each.pair must be a non-empty list"),
    ({"fields": {"source_asset_id": "$key", "observed_at": "time"}}, "fields mapping: missing ['price_usd']"),
    ({"fields": {"source_asset_id": "$each.symbol", "observed_at": "time", "price_usd": "close"}},
     "fields.source_asset_id reads '$each.symbol'"),
    ({"times": {"observed_at": "epoch"}}, "times.observed_at must name a mapped field and be iso, s, ms"),
    ({"method": "PUT"}, "method must be GET or POST"),
    ({"base_url": "ftp://example.com"}, "base_url must be an http(s) URL"),
    ({"max_pages": 0}, "max_pages must be a whole number >= 1"),
    ({"incremental": {"from": "observed_at", "unit": "days"}}, "incremental.unit must be one of"),
    ({"incremental": {"overlap_seconds": 60}}, "unknown setting incremental.overlap_seconds"),
])
def test_a_setting_that_cannot_work_fails_at_start_up_naming_it(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(SourceConfigError) as refused:
        build(**changes)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)
    assert "sk-live-123" not in str(refused.value)
