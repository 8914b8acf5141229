"""`api_key_env` may name any variable: the settings hand its value to the source, never to the stored config."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from kasparro.catalog import declared_sources
from kasparro.config import load_config
from kasparro.fake_upstream import FakeUpstream
from kasparro.sources import SourceContext, build_source

from .conftest import FAST_RPM, upstream_log

ContextFactory = Callable[..., SourceContext]


def test_a_key_in_a_variable_of_any_name_reaches_its_source_and_nothing_else(
        tmp_path: Path, keyed_upstream: FakeUpstream, make_context: ContextFactory, api_key: str) -> None:
    sources_file = tmp_path / "sources.toml"
    sources_file.write_text(f'[sources.gecko]\nkind = "coingecko"\nbase_url = "{keyed_upstream.coingecko_url}"\n'
                            f'api_key_env = "CG_KEY"\nper_page = 50\nrequests_per_minute = {FAST_RPM}\n')
    config = load_config({"SOURCES_FILE": str(sources_file), "CG_KEY": api_key, "API_KEY": "ours",
                          "UNDECLARED_SECRET": "not for sources"})

    spec = declared_sources(config)["gecko"]  # what a run stores as its config
    source = build_source("gecko", spec, make_context(config["SECRETS"]))

    assert len(list(source.pages(None, 1000))) >= 1
    assert all(entry["auth_ok"] for entry in upstream_log(keyed_upstream, "coingecko"))
    assert api_key not in json.dumps(spec)
    assert config["SECRETS"] == {"CG_KEY": api_key}  # neither our own key nor undeclared variables


def test_an_unreadable_sources_file_leaves_the_secrets_to_the_provider_key_names(tmp_path: Path) -> None:
    # The catalog reports a broken sources file where it is used; settings must still load.
    config = load_config({"SOURCES_FILE": str(tmp_path / "missing.toml"), "COINGECKO_API_KEY": "g"})

    assert config["SECRETS"] == {"COINGECKO_API_KEY": "g"}
