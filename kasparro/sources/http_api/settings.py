"""Read an http source's settings from sources.toml strictly: an unknown key, a bad paginator or a secret written
in the file fails at start-up with SourceConfigError naming the key.

Templates: a string in `path`, `params`, `headers` or `body` may hold `{name}`, where name is an `each` key
(the fan-out value of the series) or `since` (the checkpoint, see `Incremental`). A value that is exactly one
template keeps the variable's type (a number stays a number); a parameter or body key whose `{since}` is not
known yet (the first run, without `incremental.initial`) is left out of the request.
"""
from __future__ import annotations

import base64
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kasparro.errors import SourceConfigError
from kasparro.sources import SourceContext
from kasparro.sources.http import SECRET_PARAM_HINTS, number_setting, secret_setting

# Settings every kind may have, read by the pipeline rather than the source.
PIPELINE_KEYS = {"kind", "enabled", "ids", "batch_size", "max_batch_bytes", "backfill", "drift_policy",
                 "drift_confidence", "drift_max_findings"}
# Settings `client_from_spec` reads (see kasparro.sources.http), and `api_key_env`, the secret's variable.
CLIENT_KEYS = {"requests_per_minute", "max_wait_seconds", "rate_limit_group", "timeout_seconds", "max_retries",
               "backoff_seconds", "max_retry_after_seconds", "request_deadline_seconds", "max_response_bytes",
               "max_depth", "api_key_env"}
OWN_KEYS = {"base_url", "path", "method", "params", "headers", "body", "each", "records_path", "columns",
            "error_path", "ok_value", "error_message_path", "fields", "times", "incremental", "paginate", "auth",
            "max_records", "max_pages", "coins"}
PAGINATE_KEYS = {
    "none": set(),
    "page": {"page_param", "start", "page_size"},
    "offset": {"offset_param", "limit_param", "limit", "start", "total_path"},
    "cursor": {"next_cursor_path", "cursor_param", "cursor_adjust", "start", "floor_from_checkpoint"},
    "next_url": {"next_url_path"},
    "link": set(),
    "time": {"start_param", "end_param", "window", "unit", "start", "end"},
}
REQUIRED_PAGINATE_KEYS = {"page": {"page_param"}, "offset": {"offset_param", "limit_param", "limit"},
                          "cursor": {"next_cursor_path", "cursor_param"}, "next_url": {"next_url_path"},
                          "time": {"start_param", "end_param", "window", "start"}}
AUTH_KEYS = {"header": {"name"}, "bearer": set(), "query": {"name"}, "basic": {"username"}}
INCREMENTAL_KEYS = {"from", "unit", "overlap", "initial"}
SINCE_UNITS = ("s", "ms", "iso")
METHODS = ("GET", "POST")
TEMPLATE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
DEFAULT_MAX_PAGES = 100
DEFAULT_MAX_RECORDS = 1_000_000


def fail(source: str, message: str) -> SourceConfigError:
    """Return the start-up error for one wrong setting (raised by the caller)."""
    return SourceConfigError(message, source=source)


def table(source: str, spec: Mapping[str, Any], key: str) -> dict[str, Any]:
    """Return the sub-table `key` (empty when left out); raise if it is not a table."""
    value = spec.get(key, {})
    if not isinstance(value, Mapping):
        raise fail(source, f"{key} must be a table, not {value!r}")
    return dict(value)


def only_keys(source: str, where: str, settings: Mapping[str, Any], allowed: set[str]) -> None:
    """Refuse a key that is not a setting, naming it."""
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise fail(source, f"unknown setting {where}{unknown[0]} (allowed: {', '.join(sorted(allowed))})")


def whole(source: str, settings: Mapping[str, Any], key: str, default: int | None = None,
          minimum: int | None = None) -> int:
    """Return a whole-number setting; raise naming it when it is not one."""
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        floor = f" >= {minimum}" if minimum is not None else ""
        raise fail(source, f"{key} must be a whole number{floor}, not {value!r}")
    return value


@dataclass(frozen=True)
class Templates:
    """Fill `{name}` templates in request settings with a series' variables."""

    names: frozenset[str]

    def check(self, source: str, where: str, value: Any) -> None:
        """Refuse a template naming a variable that does not exist."""
        for text in _strings(value):
            for name in TEMPLATE.findall(text):
                if name not in self.names:
                    raise fail(source, f"{where} uses {{{name}}}, which is neither an each key nor since")

    def fill(self, value: Any, variables: Mapping[str, Any]) -> Any:
        """Return `value` with templates filled; a key whose variable is None is dropped from a table."""
        if isinstance(value, Mapping):
            filled = {k: self.fill(v, variables) for k, v in value.items()}
            return {k: v for k, v in filled.items() if v is not _MISSING}
        if isinstance(value, list):
            return [v for v in (self.fill(v, variables) for v in value) if v is not _MISSING]
        if not isinstance(value, str) or "{" not in value:
            return value
        names = TEMPLATE.findall(value)
        if any(variables.get(name) is None for name in names):
            return _MISSING
        only = TEMPLATE.fullmatch(value)
        if only:
            return variables[only.group(1)]
        return TEMPLATE.sub(lambda match: str(variables[match.group(1)]), value)


_MISSING = object()


def _strings(value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def fan_out(source: str, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Return one set of variables per series: the product of the `each` lists (one empty set without `each`)."""
    each = table(source, spec, "each")
    for key, values in each.items():
        if not isinstance(values, list) or not values or not all(isinstance(v, (str, int)) for v in values):
            raise fail(source, f"each.{key} must be a non-empty list of strings or numbers, not {values!r}")
    return [dict(zip(each, combination)) for combination in itertools.product(*each.values())]


def refuse_literal_secrets(source: str, spec: Mapping[str, Any]) -> None:
    """Refuse a header or parameter that looks like a secret and is written in the file rather than named."""
    for key in ("headers", "params"):
        for name, value in table(source, spec, key).items():
            secret_like = name.lower() == "authorization" or any(h in name.lower() for h in SECRET_PARAM_HINTS)
            if secret_like and not (isinstance(value, str) and TEMPLATE.fullmatch(value)):
                raise fail(source, f"{key}.{name} looks like a secret written in sources.toml; send it with "
                                   "[auth] and name its environment variable in api_key_env")


@dataclass(frozen=True)
class Auth:
    """How the secret is sent: headers, query parameters, and every value to mask in messages and logs."""

    headers: dict[str, str]
    params: dict[str, str]
    secrets: tuple[str, ...]


def auth_from_spec(source: str, spec: Mapping[str, Any], context: SourceContext) -> Auth:
    """Read `[auth]`: the secret always comes from the environment variable `api_key_env` names."""
    auth = table(source, spec, "auth")
    if not auth:
        if spec.get("api_key_env"):
            raise fail(source, "api_key_env is set but [auth] does not say how to send the key (auth.type)")
        return Auth({}, {}, ())
    kind = auth.get("type")
    if kind not in AUTH_KEYS:
        raise fail(source, f"auth.type must be one of {', '.join(AUTH_KEYS)}, not {kind!r}")
    literal = sorted(k for k in auth if k in ("key", "token", "secret", "password", "value", "api_key"))
    if literal:
        raise fail(source, f"auth.{literal[0]}: a secret is never written in sources.toml; "
                           "name its environment variable in api_key_env")
    only_keys(source, "auth.", auth, AUTH_KEYS[kind] | {"type"})
    missing = sorted(AUTH_KEYS[kind] - set(auth))
    if missing or not isinstance(spec.get("api_key_env"), str):
        raise fail(source, f"auth type {kind} needs auth.{missing[0]}" if missing
                   else f"auth type {kind} needs api_key_env, the variable holding the secret")
    key = secret_setting(source, spec, context)
    if key is None:
        return Auth({}, {}, ())
    if kind == "query":
        return Auth({}, {str(auth["name"]): key}, (key,))
    if kind == "header":
        return Auth({str(auth["name"]): key}, {}, (key,))
    if kind == "bearer":
        return Auth({"Authorization": f"Bearer {key}"}, {}, (key,))
    token = base64.b64encode(f"{auth['username']}:{key}".encode()).decode()
    return Auth({"Authorization": f"Basic {token}"}, {}, (key, token))


@dataclass(frozen=True)
class Incremental:
    """Where the checkpoint comes from (`observed_at`, or a dotted path in the body) and how `{since}` is written."""

    source_path: str | None  # None: the newest observed_at loaded
    unit: str
    overlap: float
    initial: Any


def incremental_from_spec(source: str, spec: Mapping[str, Any]) -> Incremental | None:
    """Read `[incremental]`, or None when the source reads everything each run."""
    settings = table(source, spec, "incremental")
    if not settings:
        return None
    only_keys(source, "incremental.", settings, INCREMENTAL_KEYS)
    origin = settings.get("from", "observed_at")
    if not isinstance(origin, str) or not origin:
        raise fail(source, f"incremental.from must be observed_at or a dotted path in the body, not {origin!r}")
    unit = settings.get("unit", "s")
    if unit not in SINCE_UNITS:
        raise fail(source, f"incremental.unit must be one of {', '.join(SINCE_UNITS)}, not {unit!r}")
    overlap = number_setting(source, {"incremental.overlap": settings.get("overlap", 0)}, "incremental.overlap", 0, 0)
    return Incremental(None if origin == "observed_at" else origin, unit, overlap, settings.get("initial"))


def paginate_from_spec(source: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Read `[paginate]`: its type and that type's settings, all checked."""
    settings = table(source, spec, "paginate")
    kind = settings.pop("type", "none")
    if kind not in PAGINATE_KEYS:
        raise fail(source, f"paginate.type must be one of {', '.join(PAGINATE_KEYS)}, not {kind!r}")
    only_keys(source, "paginate.", settings, PAGINATE_KEYS[kind])
    missing = sorted(REQUIRED_PAGINATE_KEYS.get(kind, set()) - set(settings))
    if missing:
        raise fail(source, f"paginate type {kind} needs paginate.{missing[0]}")
    for key in ("start", "page_size", "limit", "window", "end", "cursor_adjust"):
        if key in settings and not (kind == "cursor" and key == "start"):
            whole(source, settings, key)
    if kind == "time" and settings.get("unit", "ms") not in ("s", "ms"):
        raise fail(source, f"paginate.unit must be s or ms, not {settings['unit']!r}")
    return {"type": kind, **settings}


def check_incremental(source: str, paginate: Mapping[str, Any], incremental: Incremental | None) -> None:
    """Refuse a paginator that starts or stops at the checkpoint in a unit the checkpoint is not written in."""
    if paginate.get("floor_from_checkpoint") and (incremental is None or incremental.unit == "iso"):
        raise fail(source, "paginate.floor_from_checkpoint needs [incremental] with unit s or ms")
    if paginate["type"] == "time" and incremental is not None and incremental.unit != paginate.get("unit", "ms"):
        raise fail(source, f"incremental.unit {incremental.unit!r} must be paginate.unit "
                           f"{paginate.get('unit', 'ms')!r}: a time window starts at the checkpoint")
