"""Read any market REST API declared entirely in sources.toml: `kind = "http"`.

    module          holds
    settings.py     the settings, checked at start-up (unknown key, bad paginator, literal secret), auth, templates
    paginators.py   `[paginate]` -> a paginator of kasparro.sources.paginate
    records.py      records in an answer, the error check, the mapping to unified fields and time formats
    source.py       the source: fan-out series, incremental checkpoints, max_records

Requests go through the shared HttpClient (kasparro.sources.http): the Redis rate-limit budget,
Retry-After, retries, timeouts, the body size cap, the request deadline, credential stripping on a
redirect to another host, and redaction of the secret wherever it is sent (header or query parameter).

Identity: with `ids = "<kind>"` a source's ids go through that kind's slug rule and overrides, as for the
other kinds. With `coins = { PAIR = "slug" }` each listed pair becomes that canonical coin (an override of
this source, above data/asset_overrides.csv; an alias already made still stands), and a record whose
source_asset_id is not listed is rejected with that reason: a venue pair never merges by its ticker.
Without either, identity's usual order applies to the id (alias, override, same name AND symbol, else a
new asset named by the id).
"""
from __future__ import annotations

from kasparro.sources import register
from kasparro.sources.http_api.source import HttpApiSource

register("http")(HttpApiSource)
