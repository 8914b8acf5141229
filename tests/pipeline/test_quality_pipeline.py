"""The quality rules as the real worker runs them when a source run closes."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from kasparro.db import db
from kasparro.fake_upstream.server import FakeUpstream
from kasparro.models import Anomaly, AssetAlias
from tests.conftest import PROVIDER_KEYS, ROOT
from tests.pipeline.helpers import HEADER, csv_spec, declare, run_now

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream(ROOT / "data" / "upstream", coinpaprika_key=PROVIDER_KEYS["COINPAPRIKA_API_KEY"])
    with server:
        server.start()
        yield server


def _rows(start: int, count: int) -> str:
    # One coin, one row a day, prices moving a little: nothing but the volume should look odd.
    first = date(2020, 1, 1)
    return "".join(f"bitcoin,{first + timedelta(days=i)},{7000 + i},1000,100000\n" for i in range(start, start + count))


def _findings(app: Flask, run_id: int) -> list[tuple[str, str]]:
    with app.app_context():
        rows = db.session.execute(select(Anomaly.rule, Anomaly.severity).where(Anomaly.run_id == run_id)
                                  .order_by(Anomaly.id)).all()
        return [tuple(row) for row in rows]


def test_a_csv_run_reading_far_fewer_rows_than_its_last_runs_is_a_volume_finding(
        app: Flask, client: FlaskClient, sources_file: Path, tmp_path: Path) -> None:
    data = tmp_path / "daily.csv"
    data.write_text(HEADER)
    declare(sources_file, {"daily": csv_spec(data)})
    runs = []
    for n in range(4):  # each run reads the 40 rows appended since the last
        with data.open("a") as out:
            out.write(_rows(40 * n, 40))
        runs.append(run_now(app))
    with data.open("a") as out:
        out.write(_rows(160, 5))

    last = run_now(app)

    assert [r.source_runs[0].extracted for r in runs] + [last.source_runs[0].extracted] == [40, 40, 40, 40, 5]
    assert all(_findings(app, r.id) == [] for r in runs)
    assert _findings(app, last.id) == [("volume", "critical")]
    shown = client.get(f"/runs/{last.id}").get_json()["data"]["anomalies"]
    assert [(a["rule"], a["observed"], a["expected"]) for a in shown] == [("volume", 5.0, 40.0)]


def _bitcoin_alias(app: Flask) -> tuple[bool, bool]:
    with app.app_context():
        alias = db.session.execute(select(AssetAlias).where(AssetAlias.source_asset_id == "btc-bitcoin")).scalar_one()
        return alias.active, alias.inactive_since is not None


def test_a_coin_leaving_the_coinpaprika_listing_goes_inactive_and_comes_back(
        app: Flask, client: FlaskClient, sources_file: Path, upstream: FakeUpstream) -> None:
    declare(sources_file, {"coinpaprika": {"kind": "coinpaprika", "base_url": upstream.coinpaprika_url,
                                           "api_key_env": "COINPAPRIKA_API_KEY", "requests_per_minute": 600}})
    first = run_now(app)
    upstream.advance("coinpaprika")
    upstream.inject("coinpaprika", "drop_item", id="btc-bitcoin")

    without = run_now(app)
    gone = _bitcoin_alias(app)
    upstream.advance("coinpaprika")
    back = run_now(app)

    assert (first.source_runs[0].inserted, without.source_runs[0].inserted) == (300, 299)
    assert gone == (False, True)
    assert _bitcoin_alias(app) == (True, False)
    listed = client.get("/anomalies?source=coinpaprika&rule=asset_disappeared").get_json()["data"]
    assert [(a["run_id"], a["asset"]) for a in listed] == [(without.id, "bitcoin")]
    returned = client.get("/anomalies?rule=asset_reappeared").get_json()["data"]
    assert [(a["run_id"], a["asset"]) for a in returned] == [(back.id, "bitcoin")]
    assert _findings(app, first.id) == []
