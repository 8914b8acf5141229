"""The shipped sample CSVs load as documented in data/README.md: 295 good rows and 5 rejects each."""
from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from kasparro.db import db
from kasparro.models import Asset, MarketQuote
from tests.conftest import ROOT
from tests.pipeline.helpers import run_now

pytestmark = pytest.mark.usefixtures("worker")


def test_both_sample_files_load_their_valid_rows_and_reject_the_corrupted_ones(
        app: Flask, sources_file: Path) -> None:
    sources_file.write_text((ROOT / "sources.toml").read_text())

    run = run_now(app, ["csv_daily_2019", "csv_kaggle_2021"])

    assert run.status == "partial"
    counts = {s.source: (s.extracted, s.inserted, s.rejected) for s in run.source_runs}
    assert counts == {"csv_daily_2019": (300, 295, 5), "csv_kaggle_2021": (300, 295, 5)}
    with app.app_context():
        sources_per_asset = dict(db.session.execute(
            select(Asset.slug, func.count(func.distinct(MarketQuote.source)))
            .join(MarketQuote, MarketQuote.asset_id == Asset.id).group_by(Asset.slug)
        ).all())
    # Coins present in both files are one asset each, quoted by both sources.
    assert sources_per_asset["bitcoin"] == 2
    assert sources_per_asset["ethereum"] == 2
