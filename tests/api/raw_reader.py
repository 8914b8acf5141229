"""GET /raw/chunks/<id>/lines/<n> in a child process, for `tests/bounded.py` to measure by its resident peak.

Kept apart from the tests so the child imports the app, not pytest. The peak is read from /proc, so it
counts what libpq and psycopg2 allocate in C (a fetched chunk) as well as Python's own objects.
"""
from __future__ import annotations

from typing import Any

from kasparro import create_app


def _peak() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


def line_cost(config: dict[str, Any], chunk_id: int, line: int, warm_line: int) -> tuple[str, int]:
    """Return the text the API shows for `line`, and how far serving it raised the process's resident peak."""
    client = create_app(config).test_client()
    # A first request pays for what any request costs once (connections, lazy imports), not for the chunk.
    assert client.get(f"/raw/chunks/{chunk_id}/lines/{warm_line}").status_code == 200
    before = _peak()
    shown = client.get(f"/raw/chunks/{chunk_id}/lines/{line}").get_json()["data"]["text"]
    return shown, _peak() - before
