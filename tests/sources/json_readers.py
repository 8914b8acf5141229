"""The JSON readers as the sources run them, for `tests/bounded.py` to call in a child under a memory limit.

Kept apart from the tests so a child imports only the readers (a third of a second), not pytest and the
database. Each reads with the default limits and returns, per record, the payload it yields and why it
is unreadable (None if it is not); the test passes those through the raw layer's `stored_json`.
"""
from __future__ import annotations

import io
from typing import Any

import requests

from kasparro.sources import json_scan
from kasparro.sources.base import RequestStats
from kasparro.sources.http import HttpClient
from kasparro.sources.watermark import as_objects

LIMIT = 1024 * 1024


def read_array(data: bytes) -> list[tuple[dict[str, Any], str | None]]:
    """Read a JSON array file as the json source does."""
    return [(e.value if e.fault is None else e.evidence, e.fault)
            for e in json_scan.array_elements(io.BytesIO(data), "", LIMIT, 0, True)]


def read_ndjson(data: bytes) -> list[tuple[dict[str, Any], str | None]]:
    """Read an NDJSON file as the json source does."""
    return [(e.value if e.fault is None else e.evidence, e.fault)
            for e in json_scan.ndjson_lines(io.BytesIO(data), 0, 0, True, LIMIT)]


def read_api(data: bytes) -> list[tuple[dict[str, Any], str | None]]:
    """Decode an API body as the CoinPaprika source does (its coins carry their faults in the payload)."""
    response = requests.Response()
    response._content, response.status_code = data, 200
    response.headers["Content-Type"] = "application/json"
    client = HttpClient("hostile", RequestStats())
    return [(coin, None) for coin in as_objects(client._decode(response, data, "http://upstream/tickers"))]


def count_array(data: bytes) -> dict[str, Any]:
    """Read a JSON array file as the json source does; return how many elements loaded, and each fault."""
    loaded, faults = 0, []
    for element in json_scan.array_elements(io.BytesIO(data), "", LIMIT, 0, True):
        loaded += element.fault is None
        if element.fault is not None:
            faults.append((element.index, element.fault))
    return {"loaded": loaded, "faults": faults}


def count_file(path: str, fields: dict[str, str], page_size: int) -> int:
    """Read a JSON or NDJSON file page by page as the json source does; return how many records it gave."""
    from kasparro.sources import SourceContext, build_source

    source = build_source("drop", {"kind": "json", "path": path, "fields": fields, "settle_seconds": 0},
                          SourceContext())
    return sum(len(page.items) for page in source.pages(None, page_size))


def count_file_read_whole(path: str, fields: dict[str, str], page_size: int) -> int:
    """Decode the whole file at once: what a reader that does not stream costs, for the streaming test to beat."""
    import json

    with open(path, "rb") as handle:
        body = handle.read()
    if path.endswith(".ndjson"):
        return len([json.loads(line) for line in body.splitlines() if line.strip()])
    return len(json.loads(body))
