"""Read one declared REST API: one paginated series per fan-out value, each resuming from its own checkpoint.

The cursor is `{"items": {series: {"checkpoint": value}}, "done": [series finished this run]}`. A series'
checkpoint moves forward page by page (a run cut short resumes inside the series), except when the
paginator walks back in time (`floor_from_checkpoint`): its pages come newest first, so the checkpoint moves
only when the series is finished, and a record older than the floor (`{since}`: the checkpoint less the
overlap, else `incremental.initial`) is not handed over, since a page reaches past it. `done` lets a
resumed run skip the series it finished; the run's last page clears it, so the next run reads every series
again from its checkpoint.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from kasparro.errors import PayloadError
from kasparro.sources import SourceContext
from kasparro.sources.base import CURSOR_SUMMARY, Expected, Page, Progress, RawItem, expect
from kasparro.sources.http import client_from_spec, display_url
from kasparro.sources.http_api import settings as conf
from kasparro.sources.http_api.paginators import build_paginator
from kasparro.sources.http_api.records import BODY, EACH, FieldMap, check_error, decorate, find_records, observed
from kasparro.sources.paginate import Request, Response, value_at, walk
from kasparro.sources.watermark import chunked

logger = logging.getLogger(__name__)

# A provider's free tier is rarely more generous than this; set requests_per_minute to the documented limit.
DEFAULT_REQUESTS_PER_MINUTE = 30


def series_key(variables: Mapping[str, Any]) -> str:
    """Name a series by its fan-out values ("symbol=BTCUSDT"); the only series of a source without `each` is "*"."""
    return "&".join(f"{k}={v}" for k, v in variables.items()) or "*"


class HttpApiSource:
    """A REST API declared entirely in sources.toml (see kasparro.sources.http_api)."""

    kind = "http"

    def __init__(self, name: str, spec: Mapping[str, Any], context: SourceContext) -> None:
        self.name = name
        conf.only_keys(name, "", spec, conf.PIPELINE_KEYS | conf.CLIENT_KEYS | conf.OWN_KEYS)
        self.base_url = str(spec.get("base_url") or "").rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise conf.fail(name, f"base_url must be an http(s) URL, not {spec.get('base_url')!r}")
        self.method = str(spec.get("method", "GET")).upper()
        if self.method not in conf.METHODS:
            raise conf.fail(name, f"method must be GET or POST, not {spec.get('method')!r}")
        self.series = conf.fan_out(name, spec)
        self.templates = conf.Templates(frozenset({*self.series[0], "since"}))
        self.request = {key: spec.get(key, default) for key, default in
                        (("path", ""), ("params", {}), ("headers", {}), ("body", None))}
        for key, value in self.request.items():
            self.templates.check(name, key, value)
        conf.refuse_literal_secrets(name, spec)
        self.records_path = str(spec.get("records_path", ""))
        self.columns = [str(column) for column in spec.get("columns", [])]
        self.error = (str(spec.get("error_path", "")), spec.get("ok_value"), str(spec.get("error_message_path", "")))
        self.fields = FieldMap(name, spec, set(self.series[0]))
        self.coins = {str(k): str(v) for k, v in conf.table(name, spec, "coins").items()}
        self.incremental = conf.incremental_from_spec(name, spec)
        self.paginate = conf.paginate_from_spec(name, spec)
        conf.check_incremental(name, self.paginate, self.incremental)
        self.max_pages = conf.whole(name, spec, "max_pages", conf.DEFAULT_MAX_PAGES, 1)
        self.max_records = conf.whole(name, spec, "max_records", conf.DEFAULT_MAX_RECORDS, 1)
        self.auth = conf.auth_from_spec(name, spec, context)
        self.client = client_from_spec(name, spec, context, default_rpm=DEFAULT_REQUESTS_PER_MINUTE,
                                       auth_headers=self.auth.headers, secrets=self.auth.secrets)

    @property
    def asset_overrides(self) -> dict[tuple[str, str], str]:
        """Return `coins` as identity overrides of this source: (source name, pair) -> canonical slug."""
        return {(self.name, pair): slug for pair, slug in self.coins.items()}

    def pages(self, cursor: Mapping[str, Any] | None, page_size: int) -> Iterator[Page]:
        """Yield each series' records newer than its checkpoint, series after series, at most `max_records`."""
        run = _Run(cursor)
        held: Page | None = None
        for variables in self.series:
            key = series_key(variables)
            if key in run.done:
                continue  # finished by the run this one resumes
            for chunk in self._series(key, variables, run, page_size):
                if held is not None:
                    yield held
                held = Page(chunk, run.cursor(), Progress(run.handed, None, "records"))
            run.done.append(key)
            if held is not None:  # carries the finished series' checkpoint and its place in `done`
                held = Page(held.items, run.cursor(), held.progress)
            if run.handed >= self.max_records:
                logger.info("http source reached max_records source=%s max_records=%d", self.name,
                            self.max_records, extra={"source": self.name, "max_records": self.max_records})
                break
        if held is not None:
            yield Page(held.items, run.cursor(final=True), Progress(run.handed, run.handed, "records"))

    def _series(self, key: str, variables: Mapping[str, Any], run: _Run, page_size: int) -> Iterator[list[RawItem]]:
        since = self._since(run.checkpoints.get(key))
        paginator = build_paginator(self.paginate, since)
        backward = bool(self.paginate.get("floor_from_checkpoint"))
        newest = run.checkpoints.get(key)
        fetch = self._fetcher(variables, since)
        floor = since if backward and _is_number(since) else None
        for number, (_, response) in enumerate(walk(paginator, fetch, self.max_pages), 1):
            # Paged back in time, a page reaches past the floor: those days are loaded already, or before the
            # wanted start (CryptoCompare's zero-filled days before a coin's history).
            kept = response.data if floor is None else [r for r in response.data if not self._before(r, floor)]
            records = kept[:self.max_records - run.handed]
            # A body value (Kraken's `last`) covers the whole answer: it moves only once all of it is handed over.
            whole = response.body if len(records) == len(kept) else None
            chunks = list(chunked([RawItem(r, f"{key}#page{number}[{i}]") for i, r in enumerate(records)],
                                  page_size)) or [[]]
            for index, chunk in enumerate(chunks, 1):
                newest = self._checkpoint(newest, [item.payload for item in chunk], whole if index == len(chunks)
                                          else None)
                if not backward:
                    run.checkpoints[key] = newest
                if chunk:
                    run.handed += len(chunk)
                    yield chunk
            if run.handed >= self.max_records:
                break
        run.checkpoints[key] = newest

    def _fetcher(self, each: Mapping[str, Any], since: Any) -> Callable[[Request], Response]:
        filled = {key: self.templates.fill(value, {**each, "since": since}) for key, value in self.request.items()}
        url = self.base_url + ("/" + str(filled["path"]).lstrip("/") if filled["path"] else "")

        def fetch(request: Request) -> Response:
            params = {**self.auth.params} if request.url else {**filled["params"], **request.params, **self.auth.params}
            target = request.url or url
            body, headers = self.client.request_json(target, params, method=self.method,
                                                     json_body=filled["body"] if self.method == "POST" else None)
            shown = f"{self.method} {self.client.redact(display_url(target, params))}"
            check_error(self.name, body, *self.error, shown)
            records = find_records(body, self.records_path, self.columns)
            if records is None:
                raise PayloadError(f"{shown} holds no list or object at records_path {self.records_path!r}",
                                   source=self.name)
            records = decorate(records, each, body, self.fields.body_paths, self.client.max_depth)
            return Response(body, headers, len(records), target, records)

        return fetch

    def _since(self, checkpoint: Any) -> Any:
        """Return `{since}`: the checkpoint less the overlap, written in the incremental unit, else `initial`."""
        spec = self.incremental
        if spec is None:
            return None
        if checkpoint is None:
            return spec.initial
        if spec.source_path is not None:
            return checkpoint - spec.overlap if _is_number(checkpoint) and spec.overlap else checkpoint
        overlap = timedelta(seconds=spec.overlap / (1000 if spec.unit == "ms" else 1))
        moment = datetime.fromisoformat(checkpoint) - overlap
        if spec.unit == "iso":
            return moment.isoformat().replace("+00:00", "Z")
        return int(moment.timestamp() * (1000 if spec.unit == "ms" else 1))

    def _checkpoint(self, newest: Any, records: list[dict[str, Any]], body: Any) -> Any:
        """Return the series' checkpoint after `records`: the newest observed_at, or the body's value (whole pages)."""
        spec = self.incremental
        if spec is None:
            return None
        if spec.source_path is not None:
            found = value_at(body, spec.source_path) if body is not None else None
            return newest if found is None else found
        moments = [m for m in (self._observed(r) for r in records) if m is not None]
        if newest is not None:
            moments.append(datetime.fromisoformat(newest))
        return max(moments).astimezone(UTC).isoformat() if moments else None

    def _before(self, record: Mapping[str, Any], floor: float) -> bool:
        """Return whether a record's observed_at is older than `floor` (in the incremental unit)."""
        moment = self._observed(record)
        scale = 1000 if self.incremental is not None and self.incremental.unit == "ms" else 1
        return moment is not None and moment.timestamp() * scale < floor

    def _observed(self, record: Mapping[str, Any]) -> datetime | None:
        try:
            return observed(self.fields.unified(record)["observed_at"])
        except (KeyError, TypeError, ValueError):
            return None  # rejected by transform; it moves no checkpoint

    def expected_schema(self) -> Mapping[str, Expected]:
        """Return the mapped paths and the types each may hold, so drift sees a renamed field (or a dropped column)."""
        # Every named column is expected, mapped or not: a row one column short lacks the last name.
        columns = {column: expect("number|string|null") for column in self.columns}
        # The values this kind adds to each record are its own, never the API's: known (so drift never offers
        # them as a renamed field's new name) and never required.
        own = {marker: expect("object", required=False) for marker in (EACH, BODY)}
        return {**own, **columns, **self.fields.expected_schema()}

    def to_unified(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Map a record by the configured paths; with `coins`, refuse a pair it does not map."""
        short = [column for column in self.columns if column not in payload]
        if short:
            # A dropped column moves every later value one place: no position can be trusted to hold its name.
            raise ValueError(f"row is {len(short)} column(s) short of `columns` (no {', '.join(short)}); its "
                             "values no longer sit at their names")
        fields = self.fields.unified(payload)
        if self.coins and fields["source_asset_id"] not in self.coins:
            # A pair's ticker says nothing about which coin it is: never left to identity's guess.
            raise ValueError(f"source_asset_id {fields['source_asset_id']!r} is not in coins; unmapped pairs are "
                             "rejected, never merged by ticker")
        return fields


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Run:
    """Checkpoints, finished series and records handed over so far in one extract."""

    def __init__(self, cursor: Mapping[str, Any] | None) -> None:
        items = (cursor or {}).get("items")
        self.checkpoints: dict[str, Any] = {k: v.get("checkpoint") for k, v in (items or {}).items()
                                            if isinstance(v, Mapping)}
        self.done: list[str] = [str(k) for k in (cursor or {}).get("done", [])]
        self.handed = 0

    def cursor(self, final: bool = False) -> dict[str, Any]:
        """Return the cursor as of now; the final one forgets which series this run finished."""
        items = {k: {"checkpoint": v} for k, v in self.checkpoints.items() if v is not None}
        summary = f"checkpoints of {len(items)} series" + ("" if final else f", {len(self.done)} done this run")
        return {"items": items, "done": [] if final else list(self.done), CURSOR_SUMMARY: summary}
