"""Offline (make run, tests), a declared API reads the fake upstream at its `offline_path`; online, its real URL."""
from __future__ import annotations

from pathlib import Path

from kasparro.catalog import declared_sources
from kasparro.sources import SourceContext, build_source
from kasparro.sources.base import RequestStats

BLOCK = """
[sources.venue]
kind = "http"
base_url = "https://api.venue.example"
offline_path = "/venue/"
path = "/v1/prices"
records_path = "data"
[sources.venue.fields]
source_asset_id = "id"
observed_at = "t"
price_usd = "p"
"""


def test_offline_a_declared_api_reads_the_fake_upstream_at_its_offline_path_and_its_real_url_otherwise(
        tmp_path: Path) -> None:
    (tmp_path / "sources.toml").write_text(BLOCK)
    config = {"SOURCES_FILE": str(tmp_path / "sources.toml"), "FAKE_UPSTREAM_URL": "http://upstream:8900/"}

    offline = declared_sources({**config, "OFFLINE": True})["venue"]
    online = declared_sources({**config, "OFFLINE": False})["venue"]

    assert (offline["base_url"], online["base_url"]) == ("http://upstream:8900/venue", "https://api.venue.example")
    # `offline_path` is the deployment's, not the kind's: the kind, which refuses unknown keys, never sees it.
    assert "offline_path" not in offline and "offline_path" not in online
    context = SourceContext(base_dir=tmp_path, stats=RequestStats())
    assert build_source("venue", offline, context).name == "venue"
