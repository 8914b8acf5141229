"""Fetch JSON from a provider politely: budgeted, retried with backoff, counted, bounded, and never leaking keys.

    2xx               decode JSON; HTML or broken JSON -> PayloadError; a byte that is not UTF-8,
                      or an array element nested past what Python parses, costs only its record
    429               honour Retry-After (seconds or HTTP-date) across all processes, then retry; a
                      Retry-After over max_retry_after_seconds pauses every process for that cap only,
                      and this call gives up (TransientSourceError: the next run calls again after it)
    5xx, timeout,     retry after exponential backoff with full jitter
    connection error
    401, 403          SourceAuthError at once
    other 4xx         SourceConfigError at once (the request itself is wrong)
    retries run out   TransientSourceError (the task may try again later)
    body over         PayloadError at once, by Content-Length or while reading: terminal, because the
    max_response_bytes  same listing will be as large on a retry (raise the setting, or lower per_page)
    attempt past      TransientSourceError at once, whatever stage it is in (connect, headers, body,
    request_deadline_seconds  redirect): a slow upstream may be quick later, but retrying a drip at once
                      would only hold the worker for another deadline
    redirect to       followed without the source's credential headers (see kasparro.sources.transport)
    another origin

`get_json` sends GET; `request_json` may send POST with a JSON body, and returns the answer's headers too
(a `Link` header pages some APIs). Both go through the same budget, retries and limits.
"""
from __future__ import annotations

import io
import json
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from kasparro.errors import PayloadError, SourceAuthError, SourceConfigError, TransientSourceError
from kasparro.redact import redact_text
from kasparro.sources import SourceContext, json_scan
from kasparro.sources.base import MAX_DEPTH, MAX_DEPTH_CEILING, UNREADABLE, RequestStats, TooDeep, loads_json
from kasparro.sources.ratelimit import Budget
from kasparro.sources.transport import Deadline, KeyedSession, origin

logger = logging.getLogger(__name__)

REDACTED = "***"
# Query parameters whose values are secrets wherever they appear.
SECRET_PARAM_HINTS = ("key", "token", "secret", "signature", "password")
SNIPPET_CHARS = 200
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
DEFAULT_REQUEST_DEADLINE_SECONDS = 60.0
# An error answer is read this far for its message and no further.
ERROR_BODY_BYTES = 64 * 1024
CHUNK_BYTES = 64 * 1024
# RFC 9110 delta-seconds (a fraction and a sign tolerated); anything else must be an HTTP-date.
_DELTA_SECONDS = re.compile(r"[+-]?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class _Retry:
    """Why an attempt failed in a way worth retrying, and how long the provider asked us to wait."""

    reason: str
    delay: float | None = None


class HttpClient:
    """Send requests (GET, or POST with a JSON body) for one source within its budget and decode JSON answers."""

    def __init__(self, source: str, stats: RequestStats, *, budget: Budget | None = None,
                 auth_headers: Mapping[str, str] | None = None, timeout: float = 10.0,
                 max_retries: int = 3, backoff_seconds: float = 1.0, max_backoff_seconds: float = 30.0,
                 max_retry_after_seconds: float = 120.0, max_depth: int = MAX_DEPTH,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
                 request_deadline_seconds: float = DEFAULT_REQUEST_DEADLINE_SECONDS,
                 is_auth_error: Callable[[int, str], bool] | None = None,
                 secrets: Iterable[str] = ()) -> None:
        self.source = source
        self.stats = stats
        self.budget = budget
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.max_retry_after_seconds = max_retry_after_seconds
        self.max_response_bytes = max_response_bytes
        self.request_deadline_seconds = request_deadline_seconds
        self.max_depth = max_depth
        self.is_auth_error = is_auth_error
        self.session = KeyedSession(credential_headers=(auth_headers or {}).keys())
        self.session.headers["Accept"] = "application/json"
        self.session.headers.update(auth_headers or {})
        # `secrets`: values sent elsewhere than a header (a query parameter), masked wherever they appear too.
        self._secrets = [value for value in (*(auth_headers or {}).values(), *secrets) if value]
        _TRANSPORT_LOG.hide(secrets)
        # The verb of the request under way, for messages; a client sends one request at a time.
        self._verb = "GET"

    def get_json(self, url: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET `url` and return its decoded JSON body, retrying what may pass."""
        return self.request_json(url, params)[0]

    def request_json(self, url: str, params: Mapping[str, Any] | None = None, *, method: str = "GET",
                     json_body: Any = None) -> tuple[Any, Mapping[str, str]]:
        """Send `method` to `url` (POST with `json_body`) and return its decoded JSON body and its headers."""
        self._verb = method
        shown = self.redact(display_url(url, params))
        response, body = self._fetch(url, params, shown, max_bytes=self.max_response_bytes,
                                     limit_name="max_response_bytes", json_body=json_body)
        return self._decode(response, body, shown), response.headers

    def get_bytes(self, url: str, max_bytes: int, accept: str = "*/*", limit_name: str = "") -> bytes:
        """GET `url` and return its body as bytes, refusing a body over `max_bytes` (PayloadError naming `limit_name`)."""
        self._verb = "GET"
        shown = self.redact(display_url(url))
        return self._fetch(url, None, shown, {"Accept": accept}, max_bytes=max_bytes, limit_name=limit_name)[1]

    def _fetch(self, url: str, params: Mapping[str, Any] | None, shown: str,
               headers: Mapping[str, str] | None = None, *, max_bytes: int,
               limit_name: str, json_body: Any = None) -> tuple[requests.Response, bytes]:
        attempts = self.max_retries + 1
        for attempt in range(1, attempts + 1):
            outcome = self._attempt(url, params, shown, attempt, headers, max_bytes, limit_name, json_body)
            if not isinstance(outcome, _Retry):
                return outcome
            if attempt == attempts:
                break
            self.stats.retries += 1
            self._wait_before_retry(outcome, attempt, shown)
        raise TransientSourceError(f"{self._verb} {shown} failed after {attempts} attempts; last: {outcome.reason}",
                                   source=self.source)

    def _attempt(self, url: str, params: Mapping[str, Any] | None, shown: str, attempt: int,
                 headers: Mapping[str, str] | None, max_bytes: int,
                 limit_name: str, json_body: Any = None) -> tuple[requests.Response, bytes] | _Retry:
        if self.budget is not None:
            self._count_wait(self.budget.acquire())
        self.stats.requests += 1
        started = time.monotonic()
        with Deadline(self.request_deadline_seconds) as deadline:
            try:
                response = self.session.request(self._verb, url, params=params, headers=headers, json=json_body,
                                                stream=True, timeout=min(self.timeout, deadline.left()))
            except requests.RequestException as exc:
                return self._failed_send(exc, deadline, shown, attempt)
            with response:
                self._log_response(response, shown, started, attempt)
                ok = 200 <= response.status_code < 300
                body = self._read(response, shown, max_bytes if ok else ERROR_BODY_BYTES, deadline,
                                  limit_name if ok else None)
        if isinstance(body, _Retry):
            return self._log_retry(body, shown, attempt)
        return self._classify(response, body, shown, attempt)

    def _failed_send(self, exc: requests.RequestException, deadline: Deadline, shown: str,
                     attempt: int) -> _Retry:
        self._check_deadline(deadline, shown)
        if isinstance(exc, requests.Timeout):
            return self._log_retry(_Retry(f"no answer within {self.timeout:g}s"), shown, attempt)
        if isinstance(exc, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
            return self._log_retry(_Retry(f"connection failed ({type(exc).__name__})"), shown, attempt)
        raise SourceConfigError(f"{self._verb} {shown} cannot be sent: {self.redact(str(exc))[:SNIPPET_CHARS]}",
                                source=self.source) from None

    def _read(self, response: requests.Response, shown: str, max_bytes: int, deadline: Deadline,
              limit_name: str | None) -> bytes | _Retry:
        """Read the body up to `max_bytes` within the deadline; past it, fail (`limit_name`) or cut (None)."""
        declared = response.headers.get("Content-Length", "").strip()
        named = f" ({limit_name})" if limit_name else ""
        # isascii: "²" is a digit to Python but no number to int(); http.client ignores such a length too.
        if limit_name is not None and declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
            raise PayloadError(f"{self._verb} {shown} announced {declared} bytes, over the {max_bytes} byte "
                               f"limit{named}",
                               source=self.source)
        body = bytearray()
        try:
            for chunk in response.iter_content(CHUNK_BYTES):
                body += chunk
                self._check_deadline(deadline, shown)
                if len(body) > max_bytes:  # read no further than the limit, whatever the headers said
                    if limit_name is None:
                        break
                    raise PayloadError(f"{self._verb} {shown} sent more than {max_bytes} bytes, over the byte "
                                       f"limit{named}",
                                       source=self.source)
        except requests.RequestException as exc:
            self._check_deadline(deadline, shown)
            return _Retry(f"broke off mid-body ({type(exc).__name__})")
        # A body without a length ends when the connection does, so a shut socket looks like its end.
        self._check_deadline(deadline, shown)
        return bytes(body[:max_bytes])

    def _check_deadline(self, deadline: Deadline, shown: str) -> None:
        if deadline.expired or time.monotonic() >= deadline.ends:
            raise TransientSourceError(
                f"{self._verb} {shown} took longer than request_deadline_seconds ({deadline.seconds:g}s); "
                "stopped reading a slow or endless answer", source=self.source)

    def _log_response(self, response: requests.Response, shown: str, started: float, attempt: int) -> None:
        elapsed_ms = (time.monotonic() - started) * 1000
        logger.info("upstream response source=%s url=%s status=%d elapsed_ms=%.0f attempt=%d",
                    self.source, shown, response.status_code, elapsed_ms, attempt,
                    extra={"source": self.source, "url": shown, "status": response.status_code,
                           "elapsed_ms": round(elapsed_ms), "attempt": attempt})

    def _classify(self, response: requests.Response, body: bytes, shown: str,
                  attempt: int) -> tuple[requests.Response, bytes] | _Retry:
        status = response.status_code
        if 200 <= status < 300:
            return response, body
        if status == 429:
            self.stats.throttled += 1
            return self._log_retry(_Retry("HTTP 429 Too Many Requests", self._retry_after(response, shown)),
                                   shown, attempt)
        if status >= 500:
            return self._log_retry(_Retry(f"HTTP {status}"), shown, attempt)
        text = body.decode("utf-8", "replace")
        detail = f"HTTP {status} from {self._verb} {shown}{self._redirected(response)}: {self._snippet(text)}"
        if status in (401, 403) or (self.is_auth_error and self.is_auth_error(status, text)):
            raise SourceAuthError(f"provider refused our credentials: {detail}", source=self.source)
        raise SourceConfigError(f"request rejected, not retried: {detail}", source=self.source)

    def _redirected(self, response: requests.Response) -> str:
        if not response.history or origin(str(response.url)) == origin(str(response.history[0].url)):
            return ""
        # Our credential headers stay behind when a redirect changes host, which may be why it refused.
        return f" (redirected to {self.redact(display_url(str(response.url)))}, credentials not sent there)"

    def _retry_after(self, response: requests.Response, shown: str) -> float | None:
        delay = parse_retry_after(response.headers.get("Retry-After"))
        if delay is None:
            return None
        cap = self.max_retry_after_seconds
        if self.budget is not None:
            # The provider throttles the key, not this process: every process sharing it waits, but never
            # longer than the cap, so one hostile or mistaken header cannot stop the source for good.
            self.budget.pause(min(delay, cap))
        if delay > cap:
            # Waiting less than asked only earns another 429, so give up for now instead.
            raise TransientSourceError(
                f"{self._verb} {shown} throttled: Retry-After {delay:.0f}s exceeds the {cap:g}s cap "
                f"(max_retry_after_seconds); requests pause for {cap:g}s", source=self.source)
        return delay

    def _wait_before_retry(self, retry: _Retry, attempt: int, shown: str) -> None:
        if retry.delay is not None and self.budget is not None:
            return  # the shared pause is set; the next acquire() sleeps through it and counts the wait
        delay = retry.delay if retry.delay is not None else self.backoff(attempt)
        logger.info("upstream retry wait source=%s url=%s wait_seconds=%.3f", self.source, shown, delay,
                    extra={"source": self.source, "url": shown, "wait_seconds": round(delay, 3)})
        time.sleep(delay)
        self._count_wait(delay)

    def backoff(self, attempt: int) -> float:
        """Return a full-jitter backoff delay for the retry after `attempt`."""
        return random.uniform(0, min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1)))

    def _count_wait(self, seconds: float) -> None:
        if seconds > 0:
            self.stats.waits.append(round(seconds, 3))
            self.stats.wait_seconds += seconds

    def _log_retry(self, retry: _Retry, shown: str, attempt: int) -> _Retry:
        logger.warning("upstream attempt failed source=%s url=%s reason=%r attempt=%d of %d",
                       self.source, shown, retry.reason, attempt, self.max_retries + 1,
                       extra={"source": self.source, "url": shown, "reason": retry.reason,
                              "attempt": attempt})
        return retry

    def _decode(self, response: requests.Response, body: bytes, shown: str) -> Any:
        content_type = response.headers.get("Content-Type", "")
        if "html" in content_type.lower() or body.lstrip()[:1] == b"<":
            raise PayloadError(f"{self._verb} {shown} returned HTML ({content_type or 'no content type'}), not JSON: "
                               f"{self._snippet(body[:ERROR_BODY_BYTES].decode('utf-8', 'replace'))}",
                               source=self.source)
        try:
            return loads_json(_readable(body))
        except TooDeep:
            return self._decode_deep(body, shown)
        except ValueError as exc:
            raise PayloadError(f"{self._verb} {shown} returned a body that is not valid JSON "
                               f"({describe_json_error(exc, body)})", source=self.source) from None

    def _decode_deep(self, body: bytes, shown: str) -> list[Any]:
        """Read an array too deep for Python's parser element by element; each element past max_depth is marked."""
        elements = json_scan.array_elements(io.BytesIO(body), "", len(body) + 1, 0, True, self.max_depth)
        try:
            return [element.value if element.fault is None else {**element.evidence, UNREADABLE: element.fault}
                    for element in elements]
        except json_scan.NotJson:
            raise PayloadError(f"{self._verb} {shown} returned a body nested deeper than max_depth {self.max_depth}"
                               " outside any array element", source=self.source) from None

    def _snippet(self, text: str) -> str:
        flat = " ".join(text.split())  # error bodies are read to ERROR_BODY_BYTES at most
        # Redacted whole, then cut (redaction is linear): a cut first could split `user:password@` before
        # its "@" and leave the start of the password unmasked.
        return self.redact(flat)[:SNIPPET_CHARS] or "(empty body)"

    def redact(self, text: str) -> str:
        """Replace every secret this client sends, and any URL password or key quoted, with a placeholder."""
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        # requests quotes the whole URL when it cannot parse it, user:password@ included.
        return redact_text(text)


class _SecretFilter(logging.Filter):
    """Mask secrets in the records of a logger we do not own (urllib3 logs each request line, query and all)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def hide(self, secrets: Iterable[str]) -> None:
        """Mask these values too from now on."""
        self.secrets.update(secret for secret in secrets if secret)

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite a record holding a secret with the secret masked; keep every record."""
        if self.secrets:
            message = record.getMessage()
            masked = message
            for secret in self.secrets:
                masked = masked.replace(secret, REDACTED)
            if masked != message:
                record.msg, record.args = masked, ()
        return True


# A query-parameter key is in the request line urllib3 logs at DEBUG; a header key never is.
_TRANSPORT_LOG = _SecretFilter()
logging.getLogger("urllib3.connectionpool").addFilter(_TRANSPORT_LOG)


def _readable(body: bytes) -> str:
    """Decode the body as json.loads would; where it is not UTF-8, escape each bad byte instead of failing.

    An escaped byte is a lone surrogate, which the raw layer refuses in the record that holds it: a
    byte that is not UTF-8 costs its record, not the listing.
    """
    try:
        return body.decode(json.detect_encoding(body), "surrogatepass")
    except UnicodeDecodeError:
        return body.decode("utf-8", "surrogateescape")


def describe_json_error(exc: ValueError, body: bytes) -> str:
    """Say what is wrong with a JSON body, and whether it looks cut short."""
    where = f"{getattr(exc, 'msg', exc)} at byte {getattr(exc, 'pos', '?')} of {len(body)}"
    stripped = body.strip()
    if not stripped:
        return "the body is empty"
    closer = {b"[": b"]", b"{": b"}"}.get(stripped[:1])
    if closer and not stripped.endswith(closer):
        return f"{where}: the body ends before its closing {closer.decode()}, probably truncated"
    return where


def parse_retry_after(value: str | None) -> float | None:
    """Return the seconds a Retry-After header asks for (delta-seconds or HTTP-date), or None when it is neither.

    The result is never negative, and may be as large as the header says (infinity for a number too large to
    hold); the caller caps it.
    """
    value = (value or "").strip()
    if _DELTA_SECONDS.fullmatch(value):
        return max(float(value), 0.0)  # far too many digits become inf, not an error
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None  # garbage: retry on our own backoff instead
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def display_url(url: str, params: Mapping[str, Any] | None = None) -> str:
    """Return `url` with `params` as it would be sent, secret-looking query values masked."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + [(k, str(v)) for k, v in (params or {}).items()]
    masked = [(k, REDACTED if any(h in k.lower() for h in SECRET_PARAM_HINTS) else v) for k, v in query]
    host = parts.netloc.rsplit("@", 1)[-1]  # drop any user:password@
    return urlunsplit((parts.scheme, host, parts.path, urlencode(masked, safe="*"), ""))


def number_setting(source: str, spec: Mapping[str, Any], key: str, default: float,
                   minimum: float, maximum: float | None = None) -> float:
    """Read a numeric setting from a source spec, failing clearly when it is not a usable number."""
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SourceConfigError(f"{key} must be a number, got {value!r}", source=source)
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum:g}" + (f" and <= {maximum:g}" if maximum is not None else "")
        raise SourceConfigError(f"{key} must be {bounds}, got {value!r}", source=source)
    return float(value)


def secret_setting(source: str, spec: Mapping[str, Any], context: SourceContext) -> str | None:
    """Return the API key named by `api_key_env`, or None when none is declared or set."""
    env_name = spec.get("api_key_env")
    key = (context.secrets.get(env_name) or "").strip() if env_name else ""
    if env_name and not key:
        # Free hosts need no key, so go without; a host that does will answer 401, named as such.
        # Name the variable, never a value: the operator knows where to set it.
        logger.warning("secret %s (api_key_env) is not set; calling without a key source=%s", env_name, source,
                       extra={"source": source, "api_key_env": env_name})
    return key or None


def client_from_spec(source: str, spec: Mapping[str, Any], context: SourceContext, *,
                     default_rpm: float, auth_headers: Mapping[str, str] | None = None,
                     is_auth_error: Callable[[int, str], bool] | None = None,
                     secrets: Iterable[str] = ()) -> HttpClient:
    """Build the HTTP client a source's settings describe, on the context's shared budget.

    Sources naming the same `rate_limit_group` (say, two CoinGecko listings on one
    account) draw on one budget; by default each source has its own.
    """
    rpm = number_setting(source, spec, "requests_per_minute", default_rpm, 0.001)
    max_retry_after = number_setting(source, spec, "max_retry_after_seconds", 120, 0)
    budget = None
    if context.budget is not None:
        max_wait = spec.get("max_wait_seconds")
        group = str(spec.get("rate_limit_group") or source)
        budget = context.budget.for_source(
            group, rpm, None if max_wait is None else number_setting(source, spec, "max_wait_seconds", 0, 0),
            max_pause_seconds=max_retry_after)
    else:
        logger.warning("no shared request budget source=%s: requests are not rate limited", source,
                       extra={"source": source})
    return HttpClient(
        source, context.stats, budget=budget, auth_headers=auth_headers, is_auth_error=is_auth_error, secrets=secrets,
        timeout=number_setting(source, spec, "timeout_seconds", 10, 0.001),
        max_retries=int(number_setting(source, spec, "max_retries", 3, 0, 10)),
        backoff_seconds=number_setting(source, spec, "backoff_seconds", 1.0, 0),
        max_retry_after_seconds=max_retry_after,
        max_response_bytes=int(number_setting(source, spec, "max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES, 1)),
        request_deadline_seconds=number_setting(source, spec, "request_deadline_seconds",
                                                DEFAULT_REQUEST_DEADLINE_SECONDS, 0.001),
        max_depth=int(number_setting(source, spec, "max_depth", MAX_DEPTH, 1, MAX_DEPTH_CEILING)),
    )
