"""Messy CSV files through every stage in process: row faults are rejects or duplicates, never a failed source."""
from __future__ import annotations

from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text

from kasparro.db import db
from kasparro.models import MarketQuote, RawChunk, RawRecord, SourceRun
from tests.pipeline.helpers import HEADER, csv_spec, declare
from tests.pipeline.inprocess import Stages, law_holds, run_in_process

BTC = "bitcoin,2019-04-20,5296.23,13893183515,93510546402"
ETH = "ethereum,2019-04-20,174.26,6159014000,18409744213"
XRP = "ripple,2019-04-20,0.33,1000,2000"


def write(path: Path, body: bytes | str) -> Path:
    data = body.encode() if isinstance(body, str) else body
    path.write_bytes(HEADER.encode() + data)
    return path


def counts(source_run: SourceRun) -> dict[str, int]:
    names = ("extracted", "loaded", "rejected", "duplicates", "skipped")
    return {name: getattr(source_run, name) for name in names}


def run_file(app: Flask, sources_file: Path, path: Path, batch_size: int = 4, **settings: object) -> SourceRun:
    declare(sources_file, {"daily": csv_spec(path, **settings)})
    source_run = run_in_process(app, "daily", batch_size)
    assert law_holds(source_run), counts(source_run)
    return source_run


def reasons(client: FlaskClient) -> dict[str, str]:
    """The /rejects API: position -> the one reason given."""
    body = client.get("/rejects?limit=100").get_json()
    return {r["position"]: r["reason"]["_schema"][0] for r in body["data"]}


def test_a_line_repeated_in_one_chunk_is_kept_as_received_and_loaded_once(app: Flask, sources_file: Path,
                                                                          tmp_path: Path) -> None:
    path = write(tmp_path / "daily.csv", f"{BTC}\n{BTC}\n{ETH}\n")

    source_run = run_file(app, sources_file, path)

    assert source_run.status == "success"
    assert counts(source_run) == {"extracted": 3, "loaded": 2, "rejected": 0, "duplicates": 1, "skipped": 0}
    with app.app_context():
        (chunk,) = db.session.execute(select(RawChunk)).scalars().all()
        assert (chunk.records, chunk.repeats, chunk.data) == (3, [3], f"{BTC}\n{BTC}\n{ETH}\n".encode())
        assert db.session.execute(select(MarketQuote.raw_line).where(MarketQuote.price_usd == 5296.23)
                                  ).scalar_one() == 2


def test_a_line_repeated_in_a_later_chunk_changes_nothing_and_is_skipped(app: Flask, sources_file: Path,
                                                                        tmp_path: Path) -> None:
    path = write(tmp_path / "daily.csv", f"{BTC}\n{ETH}\n{BTC}\n{XRP}\n")

    source_run = run_file(app, sources_file, path, batch_size=2)

    assert counts(source_run) == {"extracted": 4, "loaded": 3, "rejected": 0, "duplicates": 0, "skipped": 1}
    with app.app_context():
        (first_chunk, line), = db.session.execute(
            select(RawChunk.first_line, MarketQuote.raw_line).join(RawChunk, RawChunk.id == MarketQuote.raw_chunk_id)
            .where(MarketQuote.price_usd == 5296.23)).all()
    assert (first_chunk, line) == (2, 2)  # the lineage stays with the line that first loaded it


def test_records_of_an_earlier_failed_run_are_taken_over_not_counted_twice(app: Flask, sources_file: Path,
                                                                            tmp_path: Path) -> None:
    path = write(tmp_path / "daily.csv", f"{BTC}\n{ETH}\n{XRP}\n")

    def crash(stages: Stages) -> None:
        raise RuntimeError("worker lost")

    declare(sources_file, {"daily": csv_spec(path)})
    failed = run_in_process(app, "daily", 2, between=crash)
    again = run_file(app, sources_file, path, batch_size=2)

    assert failed.status == "failed" and failed.extracted == 3
    assert again.status == "success"
    assert counts(again) == {"extracted": 3, "loaded": 3, "rejected": 0, "duplicates": 0, "skipped": 0}


def test_a_rerun_over_a_replaced_file_loads_the_new_row_and_skips_the_old(app: Flask, sources_file: Path,
                                                                         tmp_path: Path) -> None:
    path = write(tmp_path / "daily.csv", f"{BTC}\n{ETH}\n")
    run_file(app, sources_file, path)
    write(path, f"{XRP}\n{BTC}\n{ETH}\n")

    again = run_file(app, sources_file, path)

    assert counts(again) == {"extracted": 3, "loaded": 1, "rejected": 0, "duplicates": 0, "skipped": 2}


def test_a_chunk_received_again_after_a_lost_checkpoint_is_all_duplicates(app: Flask, sources_file: Path,
                                                                          tmp_path: Path) -> None:
    path = write(tmp_path / "daily.csv", f"{BTC}\n{ETH}\n")
    run_file(app, sources_file, path)
    with app.app_context():  # a restored database, say: the file is read from its start again
        db.session.execute(text("DELETE FROM checkpoints"))
        db.session.commit()

    again = run_file(app, sources_file, path)

    assert counts(again) == {"extracted": 2, "loaded": 0, "rejected": 0, "duplicates": 2, "skipped": 0}


def test_a_row_superseded_in_its_batch_or_unchanged_is_skipped(app: Flask, sources_file: Path,
                                                               tmp_path: Path) -> None:
    newer = BTC.replace("5296.23", "5300")
    path = write(tmp_path / "daily.csv", f"{BTC}\n{newer}\n")
    first = run_file(app, sources_file, path)
    write(path, f"{newer},\n")  # the same values with one more (empty) column: a new payload, no change

    again = run_file(app, sources_file, path)

    with app.app_context():
        assert db.session.execute(select(MarketQuote.price_usd)).scalar_one() == 5300
    assert counts(first) == {"extracted": 2, "loaded": 1, "rejected": 0, "duplicates": 0, "skipped": 1}
    assert counts(again) == {"extracted": 1, "loaded": 0, "rejected": 0, "duplicates": 0, "skipped": 1}


def test_every_unreadable_row_is_a_reject_with_its_reason_and_the_rest_loads(
        app: Flask, client: FlaskClient, sources_file: Path, tmp_path: Path) -> None:
    body = (f"{BTC}\n"
            + "tether,2019-04-20," + "1" * 300 + ",1,1\n"          # field over the limit
            + "tether,2019-04-21," + ",".join(["1"] * 300) + "\n"  # row over the limit
            + f"{ETH}\n").encode() + b"bit\xffcoin,2019-04-21,1,1,1\n" + b"bit\x00coin,2019-04-22,1,1,1\n" \
        + f'"{XRP}\n{ETH.replace("04-20", "04-22")}\n'.encode()
    path = write(tmp_path / "daily.csv", body)

    source_run = run_file(app, sources_file, path, max_field_bytes=200, max_row_bytes=500)

    assert source_run.status == "partial"
    assert counts(source_run) == {"extracted": 8, "loaded": 3, "rejected": 5, "duplicates": 0, "skipped": 0}
    field, row, ff, nul, quote = (len(HEADER) + body.index(needle) for needle in (
        b"tether", b"tether,2019-04-21", b"\xff", b"\x00", b'"ripple'))
    assert reasons(client) == {
        "daily.csv:3": f"daily.csv: field 3 (close) on line 3 at byte offset {field} is 300 bytes,"
                       " over max_field_bytes 200",
        "daily.csv:4": f"daily.csv: row on line 4 at byte offset {row} is 618 bytes, over max_row_bytes 500",
        "daily.csv:6": f"daily.csv: byte 0xff at offset {ff} (line 6) is not valid utf-8-sig",
        "daily.csv:7": f"daily.csv: NUL byte at offset {nul} (line 7), the file looks binary here",
        "daily.csv:8": f"daily.csv: unclosed quote opened on line 8 at byte offset {quote}",
    }
    with app.app_context():
        raw = db.session.execute(select(RawRecord).where(RawRecord.position == "daily.csv:4")).scalar_one()
        assert set(raw.payload) == {"_prefix", "_sha256", "_bytes", "_unreadable"} and raw.payload["_bytes"] == 618


def test_a_binary_file_fails_its_source_with_a_message_naming_the_byte(app: Flask, sources_file: Path,
                                                                       tmp_path: Path) -> None:
    path = tmp_path / "daily.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    declare(sources_file, {"daily": csv_spec(path)})

    source_run = run_in_process(app, "daily")

    assert source_run.status == "failed"
    assert "byte 0x89 at offset 0 (line 1) is not valid utf-8-sig; expected a CSV text file" in source_run.error


def test_nan_and_infinity_cells_are_rejected_rows_not_a_failed_source(app: Flask, sources_file: Path,
                                                                       client: FlaskClient, tmp_path: Path) -> None:
    # float() reads "nan", "inf" and "-Infinity"; none of them may reach a JSON column or a price.
    path = write(tmp_path / "daily.csv", f"{BTC}\nethereum,2019-04-20,nan,1,2\nripple,2019-04-20,inf,1,2\n"
                                         "tether,2019-04-20,1.0,-Infinity,NaN\n")

    source_run = run_file(app, sources_file, path)

    assert source_run.status == "partial"
    assert counts(source_run) == {"extracted": 4, "loaded": 1, "rejected": 3, "duplicates": 0, "skipped": 0}
    assert set(reasons_by_field(client)) == {"daily.csv:3", "daily.csv:4", "daily.csv:5"}


def reasons_by_field(client: FlaskClient) -> dict[str, dict[str, list[str]]]:
    """The /rejects API: position -> reasons per field."""
    return {r["position"]: r["reason"] for r in client.get("/rejects?limit=100").get_json()["data"]}


def test_nan_in_an_ndjson_drop_is_one_rejected_line_and_the_rest_loads(app: Flask, sources_file: Path,
                                                                       client: FlaskClient, tmp_path: Path) -> None:
    # Python's json parser reads NaN and Infinity, which are not JSON and which JSONB refuses.
    path = tmp_path / "ticks.ndjson"
    path.write_text('{"id": "bitcoin", "t": "2024-01-01T00:00:00Z", "p": 42000.5}\n'
                    '{"id": "ethereum", "t": "2024-01-01T00:00:00Z", "p": NaN}\n'
                    '{"id": "tether", "t": "2024-01-01T00:00:00Z", "p": -Infinity}\n')
    declare(sources_file, {"ticks": {"kind": "json", "path": str(path), "settle_seconds": 0,
                                     "fields": {"source_asset_id": "id", "observed_at": "t", "price_usd": "p"}}})

    source_run = run_in_process(app, "ticks")

    assert law_holds(source_run), counts(source_run)
    assert (source_run.status, source_run.loaded, source_run.rejected) == ("partial", 1, 2)
    assert set(reasons_by_field(client)) == {"ticks.ndjson:2", "ticks.ndjson:3"}
