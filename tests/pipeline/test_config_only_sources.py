"""Adding a vendor of a known kind is a change to sources.toml only: no code, no migration, no mapping table.

The deployment's own sources.toml gains one section for a third CSV vendor with
its own column names, delimiter and date format, and the real worker loads its
quotes onto the same canonical assets as the two CSV vendors already declared.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from kasparro.db import db
from kasparro.models import AssetAlias
from tests.conftest import ROOT
from tests.pipeline.helpers import quote_count, run_now

pytestmark = pytest.mark.usefixtures("worker")

# Closes from the shipped Kaggle export (data/csv/kaggle_coins_2021.csv), as a vendor with other habits would send them.
THIRD_VENDOR_CSV = """Asset;Ticker;Day;Close USD;Turnover USD
Bitcoin;BTC;07.06.2021;33560.70783776;33683936663.24
Ethereum;ETH;07.06.2021;2590.26330395;30600111276.75
XRP;XRP;07.06.2021;0.86115488;3466113431.5
Crypto.com Coin;CRO;07.06.2021;0.11576074;58119453.44
Bitcoin;BTC;08.06.2021;33472.63174808;49902050441.89
Ethereum;ETH;08.06.2021;2517.43862412;41909736777.66
XRP;XRP;08.06.2021;0.87578752;4491339500.53
Crypto.com Coin;CRO;08.06.2021;0.11417881;61664075.46
"""

THIRD_VENDOR_SECTION = """
[sources.csv_third_vendor]
kind = "csv"
path = "{path}"
delimiter = ";"
date_format = "%d.%m.%Y"
[sources.csv_third_vendor.columns]
source_asset_id = "Asset"
name = "Asset"
symbol = "Ticker"
observed_at = "Day"
price_usd = "Close USD"
volume_24h_usd = "Turnover USD"
"""


def assets_of(app: Flask, source: str) -> dict[str, int]:
    with app.app_context():
        return dict(db.session.execute(select(AssetAlias.source_asset_id, AssetAlias.asset_id)
                                       .where(AssetAlias.source == source)).all())


def test_a_third_csv_vendor_is_one_more_section_in_sources_toml(app: Flask, sources_file: Path,
                                                                  tmp_path: Path) -> None:
    vendor_file = tmp_path / "third_vendor.csv"
    vendor_file.write_text(THIRD_VENDOR_CSV)
    sources_file.write_text((ROOT / "sources.toml").read_text() + THIRD_VENDOR_SECTION.format(path=vendor_file))

    run = run_now(app, ["csv_daily_2019", "csv_kaggle_2021", "csv_third_vendor"])

    third = next(s for s in run.source_runs if s.source == "csv_third_vendor")
    assert (third.status, third.extracted, third.inserted, third.rejected) == ("success", 8, 8, 0)
    assert quote_count(app, "csv_third_vendor") == 8
    mine, kaggle, daily = (assets_of(app, s) for s in ("csv_third_vendor", "csv_kaggle_2021", "csv_daily_2019"))
    assert {name: mine[name] for name in mine} == {name: kaggle[name] for name in mine}
    assert mine["Bitcoin"] == daily["bitcoin"] and mine["XRP"] == daily["ripple"]
