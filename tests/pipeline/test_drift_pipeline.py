"""Schema drift through the whole pipeline: a real worker, the fake upstream's faults, each policy."""
from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from kasparro.db import db
from kasparro.fake_upstream.server import FakeUpstream
from kasparro.models import DriftEvent, MarketQuote, RawRecord, RejectedRecord
from tests.pipeline.helpers import csv_spec, declare, quote_count, run_now
from tests.pipeline.test_api_sources import gecko

pytestmark = pytest.mark.usefixtures("worker")


def drift_events(app: Flask) -> list[tuple]:
    with app.app_context():
        return [tuple(row) for row in db.session.execute(
            select(DriftEvent.kind, DriftEvent.field, DriftEvent.old, DriftEvent.new, DriftEvent.confidence,
                   DriftEvent.action, DriftEvent.records).order_by(DriftEvent.id))]


def count(app: Flask, model: type) -> int:
    with app.app_context():
        return db.session.execute(select(func.count()).select_from(model)).scalar_one()


def test_under_evolve_a_confident_rename_is_mapped_back_and_loads(app: Flask, sources_file: Path,
                                                                  upstream: FakeUpstream) -> None:
    declare(sources_file, {"coingecko": gecko(upstream, max_pages=1, drift_policy="evolve")})
    upstream.inject("coingecko", "rename_field", field="current_price", to="currentPrice")

    run = run_now(app)

    (source_run,) = run.source_runs
    assert (run.status, source_run.status, source_run.inserted, source_run.rejected) == ("partial", "partial", 50, 0)
    ((kind, field, old, new, confidence, action, records),) = drift_events(app)
    assert (kind, field, old, new, action, records) == ("renamed", "current_price", "current_price", "currentPrice",
                                                        "mapped", 50)
    assert 0.8 <= confidence <= 1
    assert "renamed current_price -> currentPrice" in source_run.error
    with app.app_context():  # the raw layer keeps what was received, not what was mapped
        payload = db.session.execute(select(RawRecord.payload).limit(1)).scalar_one()
        price = db.session.execute(select(MarketQuote.price_usd).limit(1)).scalar_one()
    assert "currentPrice" in payload and "current_price" not in payload and price > 0


def test_under_warn_the_drifted_records_are_rejected_and_the_run_is_partial(app: Flask, sources_file: Path,
                                                                           upstream: FakeUpstream) -> None:
    declare(sources_file, {"coingecko": gecko(upstream, max_pages=1)})
    upstream.inject("coingecko", "rename_field", field="current_price", to="currentPrice")

    run = run_now(app)

    (source_run,) = run.source_runs
    assert (run.status, source_run.inserted, source_run.rejected) == ("partial", 0, 50)
    ((kind, _, _, new, confidence, action, records),) = drift_events(app)
    assert (kind, new, action, records) == ("renamed", "currentPrice", "rejected", 50)
    assert confidence >= 0.8
    assert count(app, RejectedRecord) == 50


def test_under_freeze_the_source_fails_and_nothing_of_the_batch_loads(app: Flask, sources_file: Path,
                                                                     upstream: FakeUpstream) -> None:
    declare(sources_file, {"coingecko": gecko(upstream, max_pages=1, drift_policy="freeze")})
    upstream.inject("coingecko", "rename_field", field="current_price", to="currentPrice")

    run = run_now(app)

    (source_run,) = run.source_runs
    assert (run.status, source_run.status) == ("failed", "failed")
    assert "drift_policy=freeze" in source_run.error and "currentPrice" in source_run.error
    assert quote_count(app) == 0 and count(app, RejectedRecord) == 0
    assert count(app, RawRecord) == 50  # the raw payloads stay whatever the policy
    assert [(e[0], e[5]) for e in drift_events(app)] == [("renamed", "failed")]


def test_a_clean_listing_is_no_drift_and_a_plain_success(app: Flask, sources_file: Path,
                                                         upstream: FakeUpstream) -> None:
    declare(sources_file, {"coingecko": gecko(upstream, drift_policy="freeze")})

    run = run_now(app)

    assert (run.status, run.source_runs[0].inserted, drift_events(app)) == ("success", 100, [])


def test_a_number_sent_as_a_string_is_a_type_change_that_still_loads(app: Flask, sources_file: Path,
                                                                     upstream: FakeUpstream) -> None:
    declare(sources_file, {"coingecko": gecko(upstream, max_pages=1)})
    upstream.inject("coingecko", "type_change", field="current_price", to="string")

    run = run_now(app)

    assert (run.status, run.source_runs[0].inserted) == ("partial", 50)
    assert [(e[0], e[1], e[2], e[3], e[5]) for e in drift_events(app)] == [
        ("type_changed", "current_price", "number", "string", "noted")]


def test_null_where_a_price_was_is_a_type_change_and_rejects(app: Flask, sources_file: Path,
                                                            upstream: FakeUpstream) -> None:
    declare(sources_file, {"coingecko": gecko(upstream, max_pages=1)})
    upstream.inject("coingecko", "type_change", field="current_price", to="null")

    run = run_now(app)

    assert (run.status, run.source_runs[0].rejected) == ("partial", 50)
    assert [(e[0], e[3], e[5]) for e in drift_events(app)] == [("type_changed", "null", "rejected")]


def test_a_csv_whose_header_changed_is_drift(app: Flask, sources_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "quotes.csv"
    path.write_text("currency,date,Close Price,volume,market_cap\nbitcoin,2024-01-01,42000.5,1,2\n"
                    "ethereum,2024-01-01,2300.1,1,2\n")
    declare(sources_file, {"vendor": csv_spec(path)})

    run = run_now(app)

    (source_run,) = run.source_runs
    assert (run.status, source_run.rejected, source_run.inserted) == ("partial", 2, 0)
    assert [(e[0], e[1], e[5]) for e in drift_events(app)] == [("missing", "close", "rejected"),
                                                                ("added", "Close Price", "rejected")]


def test_drift_is_listed_paged_summarised_and_counted(app: Flask, sources_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "quotes.csv"
    path.write_text("currency,date,Close Price,volume,market_cap\nbitcoin,2024-01-01,42000.5,1,2\n")
    declare(sources_file, {"vendor": csv_spec(path)})
    run = run_now(app)
    client = app.test_client()

    first = client.get("/drift?source=vendor&limit=1").get_json()
    second = client.get(f"/drift?source=vendor&limit=1&cursor={first['meta']['next_cursor']}").get_json()
    other = client.get("/drift?source=elsewhere").get_json()
    later = client.get("/drift?since=2999-01-01T00:00:00Z").get_json()
    detail = client.get(f"/runs/{run.id}").get_json()["data"]
    (stats,) = client.get("/stats").get_json()["data"]["sources"]
    metrics = client.get("/metrics").get_data(as_text=True)

    (newest,), (oldest,) = first["data"], second["data"]
    assert (newest["kind"], newest["field"], newest["new"], newest["run_id"]) == ("added", "Close Price",
                                                                                 "Close Price", run.id)
    assert (oldest["kind"], oldest["field"], oldest["action"], oldest["records"]) == ("missing", "close",
                                                                                      "rejected", 1)
    assert first["meta"]["has_more"] and not second["meta"]["has_more"]
    assert other["data"] == [] and later["data"] == []
    assert [(d["source"], d["kind"], d["field"]) for d in detail["drift"]] == [
        ("vendor", "added", "Close Price"), ("vendor", "missing", "close")]
    assert "schema drift (2 event(s))" in detail["source_runs"][0]["error"]
    assert stats["drift_events_last_run"] == 2
    assert 'kasparro_drift_events_total{kind="missing",source="vendor"} 1.0' in metrics


def test_reprocess_after_a_mapping_fix_loads_exactly_the_records_that_were_rejected(
        app: Flask, sources_file: Path, upstream: FakeUpstream) -> None:
    declare(sources_file, {"coingecko": gecko(upstream, max_pages=1)})
    clean = run_now(app)
    upstream.advance("coingecko")
    upstream.inject("coingecko", "rename_field", field="current_price", to="currentPrice")
    drifted = run_now(app)
    with app.app_context():
        rejected = set(db.session.execute(select(RejectedRecord.raw_record_id)).scalars())
        payloads = dict(db.session.execute(select(RawRecord.id, RawRecord.payload)).all())
        # A coin CoinGecko did not update between the two days is the same quote: valid now, but nothing new.
        seen = {(p["id"], p["last_updated"]) for rid, p in payloads.items() if rid not in rejected}
        new = {rid for rid in rejected if (payloads[rid]["id"], payloads[rid]["last_updated"]) not in seen}
        before = {(q.raw_record_id, q.price_usd, q.updated_at) for q in db.session.execute(select(MarketQuote))
                  .scalars()}
    declare(sources_file, {"coingecko": gecko(upstream, max_pages=1, drift_policy="evolve")})  # the fix

    result = app.test_cli_runner().invoke(args=["etl", "reprocess", "--source", "coingecko", "--wait"])

    assert result.exit_code == 0, result.output
    assert (clean.source_runs[0].inserted, drifted.source_runs[0].rejected) == (50, len(rejected))
    with app.app_context():
        from kasparro.models import Checkpoint, Run
        run = db.session.execute(select(Run).order_by(Run.id.desc()).limit(1)).scalar_one()
        (source_run,) = run.source_runs
        loaded = set(db.session.execute(select(MarketQuote.raw_record_id)
                                        .where(MarketQuote.run_id == run.id)).scalars())
        after = {(q.raw_record_id, q.price_usd, q.updated_at) for q in db.session.execute(select(MarketQuote))
                 .scalars() if q.run_id != run.id}
        checkpoint = db.session.get(Checkpoint, "coingecko")
        left = db.session.execute(select(func.count()).select_from(RejectedRecord)).scalar_one()
    stored = len(payloads)
    assert run.trigger == "reprocess" and f"reprocess coingecko, {stored} stored record(s)" in result.output
    counts = (source_run.extracted, source_run.inserted, source_run.updated, source_run.skipped, source_run.rejected)
    assert counts == (stored, len(new), 0, stored - len(new), 0) and len(new) >= 45
    assert loaded == new and after == before and left == 0
    assert checkpoint.run_id == drifted.id  # no source was read: the checkpoint stays
    assert [e[0:2] + e[5:6] for e in drift_events(app)][-1] == ("renamed", "current_price", "mapped")


def test_reprocess_of_one_run_after_a_csv_column_fix_loads_what_its_new_header_hid(
        app: Flask, sources_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "quotes.csv"
    rows = "bitcoin,2024-01-01,42000.5,1,2\nethereum,2024-01-01,2300.1,1,2\n"
    path.write_text("currency,date,close,volume,market_cap\n" + rows)
    declare(sources_file, {"vendor": csv_spec(path)})
    run_now(app)
    path.write_text("currency,date,Close Price,volume,market_cap\n" + rows + "solana,2024-01-01,101.2,1,2\n")
    drifted = run_now(app)
    fixed = {"source_asset_id": "currency", "observed_at": "date", "price_usd": "Close Price",
             "volume_24h_usd": "volume", "market_cap_usd": "market_cap"}
    declare(sources_file, {"vendor": csv_spec(path, columns=fixed)})

    result = app.test_cli_runner().invoke(
        args=["etl", "reprocess", "--source", "vendor", "--run", str(drifted.id), "--wait"])

    assert result.exit_code == 0, result.output
    assert (drifted.status, drifted.source_runs[0].rejected) == ("partial", 3)
    assert "reprocess vendor, 3 stored record(s)" in result.output
    assert "success: vendor success extracted=3 loaded=1 rejected=0" in result.output
    assert quote_count(app) == 3 and count(app, RejectedRecord) == 0


def test_reprocess_with_nothing_stored_is_refused(app: Flask, sources_file: Path, tmp_path: Path) -> None:
    declare(sources_file, {"vendor": csv_spec(tmp_path / "quotes.csv")})

    result = app.test_cli_runner().invoke(args=["etl", "reprocess", "--source", "vendor", "--run", "7"])

    assert result.exit_code != 0
    assert "vendor: no stored raw records received by run 7 to reprocess" in result.output
