"""Processes share a source's transform, and each raw chunk loads in its own transform, in whatever order
the chunks come: in process, with real row locks. The outcome is that of loading the batches in order."""
from __future__ import annotations

import threading
from decimal import Decimal
from pathlib import Path

from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, func, select, text

from kasparro.db import db
from kasparro.models import Checkpoint, MarketQuote
from kasparro.pipeline.load import load_pending
from kasparro.pipeline.transform import transform_pending
from tests.pipeline.helpers import HEADER, csv_spec, declare
from tests.pipeline.inprocess import Stages, clean_tables, lease, start

LINES = [f"coin{n},2019-04-2{n % 3},{n + 1}.5,1000,2000" for n in range(6)]


def _extracted(sources_file: Path, tmp_path: Path, lines: list[str] = LINES, batch_size: int = 2) -> Stages:
    path = tmp_path / "daily.csv"
    path.write_text(HEADER + "".join(line + "\n" for line in lines))
    declare(sources_file, {"daily": csv_spec(path)})
    stages = start("daily")
    stages.extract(batch_size=batch_size)  # raw chunks of `batch_size` lines
    return stages


def _transform(stages: Stages, **options: object) -> int:
    return transform_pending(db.session, stages.source_run(), stages.source, stages.kind, stages.overrides, lease(),
                             **options)


def _checkpoint_batch() -> int | None:
    checkpoint = db.session.get(Checkpoint, "daily", populate_existing=True)
    return None if checkpoint is None else checkpoint.batch_id


def test_a_chunk_loads_in_its_transform_and_the_checkpoint_waits_for_the_gap_to_close(
        app: Flask, sources_file: Path, tmp_path: Path) -> None:
    other = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    with app.app_context():
        stages = _extracted(sources_file, tmp_path)
        first, second, third = stages.batches()
        with other.connect() as peer:  # another worker's transaction, on the second chunk
            peer.execute(text("SELECT id FROM raw_batches WHERE id = :id FOR UPDATE"), {"id": second.id})

            _transform(stages, skip_busy=True)

            states = [b.state for b in stages.batches()]
            checkpoint = _checkpoint_batch()
            peer.rollback()
        assert states == ["loaded", "extracted", "loaded"]  # chunk 3 did not wait for chunk 2
        assert checkpoint == first.id  # ... but the checkpoint covers only the gap-free prefix

        _transform(stages)  # the chain's own transform: nothing is left behind

        assert [b.state for b in stages.batches()] == ["loaded"] * 3
        assert _checkpoint_batch() == third.id  # closing the gap moved the checkpoint over chunk 3 too
        assert db.session.execute(select(func.count()).select_from(MarketQuote)).scalar_one() == 6
    other.dispose()


def test_with_load_in_transform_off_every_chunk_is_staged_for_the_load_task(app: Flask, sources_file: Path,
                                                                              tmp_path: Path) -> None:
    with app.app_context():
        stages = _extracted(sources_file, tmp_path)

        _transform(stages, stage_all=lambda: True)

        assert [(b.state, b.staged) for b in stages.batches()] == [("transformed", 2)] * 3
        load_pending(db.session, stages.source_run(), lease())
        assert {b.state for b in stages.batches()} == {"loaded"}
        assert db.session.execute(select(func.count()).select_from(MarketQuote)).scalar_one() == 6
        assert _checkpoint_batch() == stages.batches()[-1].id


# Few coins and days, so lines of different chunks often share a key with different prices.
_line = st.tuples(st.sampled_from(["btc", "eth", "sol"]), st.sampled_from(["20", "21", "22"]),
                  st.integers(1, 9)).map(lambda t: f"{t[0]},2019-04-{t[1]},{t[2]}.5,1000,2000")


def _load_in(order: list[int] | None, sources_file: Path, tmp_path: Path, lines: list[str],
             batch_size: int) -> tuple[dict[tuple[str, str], Decimal], int]:
    """On empty tables, transform the chunks in `order` (None: file order), then run the load task's step;
    return each key's price and the count of inserted rows, checking the checkpoint on the way."""
    clean_tables()
    stages = _extracted(sources_file, tmp_path, lines, batch_size)
    batches = stages.batches()
    for index in order if order is not None else range(len(batches)):
        stages.transform(batches[index])
    load_pending(db.session, stages.source_run(), lease())  # a chunk received twice is only marked loaded here
    assert [b.state for b in stages.batches()] == ["loaded"] * len(batches)
    assert _checkpoint_batch() == batches[-1].id
    prices = {(slug, day): price for slug, day, price in db.session.execute(text(
        "SELECT a.slug, to_char(q.observed_at AT TIME ZONE 'UTC', 'DD'), q.price_usd FROM market_quotes q"
        " JOIN assets a ON a.id = q.asset_id"))}
    return prices, stages.source_run().inserted


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_line, min_size=1, max_size=12), batch_size=st.integers(1, 4), data=st.data())
def test_chunks_loaded_in_any_order_leave_what_loading_them_in_order_leaves(
        app: Flask, sources_file: Path, tmp_path: Path, lines: list[str], batch_size: int, data: st.DataObject
) -> None:
    with app.app_context():
        in_order, inserted_in_order = _load_in(None, sources_file, tmp_path, lines, batch_size)
        chunks = -(-len(lines) // batch_size)
        order = data.draw(st.permutations(range(chunks)), label="transform order")

        any_order, inserted = _load_in(order, sources_file, tmp_path, lines, batch_size)

        assert any_order == in_order
        keys = {(line.split(",")[0], line.split(",")[1][-2:]) for line in lines}
        assert set(any_order) == keys  # nothing lost
        assert inserted == inserted_in_order == len(keys)  # nothing doubled


def test_a_key_another_process_inserted_meanwhile_makes_the_plain_insert_give_way_to_the_upsert(
        app: Flask, sources_file: Path, tmp_path: Path) -> None:
    lines = ["btc,2019-04-20,1.5,1000,2000", "eth,2019-04-20,2.5,1000,2000",
             "btc,2019-04-21,3.5,1000,2000", "eth,2019-04-21,4.5,1000,2000"]
    with app.app_context():
        stages = _extracted(sources_file, tmp_path, lines, batch_size=2)
        first, second = stages.batches()
        stages.transform(first)  # the coins exist now
        run_id, engine = stages.source_run().run_id, db.engine
        peer = engine.connect()  # another process loading a later batch with btc on the 21st, not committed yet
        peer.execute(text(
            "INSERT INTO market_quotes (asset_id, source, observed_at, price_usd, raw_chunk_id, raw_line, run_id,"
            " batch_id) SELECT asset_id, 'daily', '2019-04-21', 99, :chunk, 99, :run, :later FROM asset_aliases"
            " WHERE source = 'daily' AND source_asset_id = 'btc'"),
            {"chunk": second.chunk_id, "run": run_id, "later": second.id + 1})
        committer = threading.Timer(1.0, peer.commit)
        committer.start()

        stages.transform(second)  # its INSERT waits for the peer's key, then meets it taken

        committer.join()
        peer.close()
        prices = dict(db.session.execute(text(
            "SELECT a.slug || ' ' || to_char(q.observed_at AT TIME ZONE 'UTC', 'DD'), q.price_usd"
            " FROM market_quotes q JOIN assets a ON a.id = q.asset_id")).all())
        assert prices == {"btc 20": Decimal("1.5"), "eth 20": Decimal("2.5"), "btc 21": Decimal("99"),
                          "eth 21": Decimal("4.5")}  # the later batch's btc row stands
        assert stages.batches()[1].state == "loaded"
        assert stages.source_run().inserted == 3  # eth on the 21st; btc's was the peer's


def test_a_later_chunk_with_a_keys_same_values_still_outranks_a_chunk_between_them_loaded_last(
        app: Flask, sources_file: Path, tmp_path: Path) -> None:
    # The first and last chunks give eth on the 22nd the same price; the middle one another. The last chunk's
    # write changes no value, but the row must name it: else the middle chunk, loaded last, takes the row.
    lines = ["eth,2019-04-22,2.5,1000,2000", "btc,2019-04-20,1.5,1000,2000",
             "eth,2019-04-22,5.5,1000,2000", "btc,2019-04-21,1.5,1000,2000",
             "eth,2019-04-22,2.5,1000,2000", "btc,2019-04-22,1.5,1000,2000"]
    with app.app_context():
        in_order, _ = _load_in(None, sources_file, tmp_path, lines, 2)
        last_in_between, _ = _load_in([0, 2, 1], sources_file, tmp_path, lines, 2)

    assert in_order[("eth", "22")] == last_in_between[("eth", "22")] == Decimal("2.5")
