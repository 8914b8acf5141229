"""Delivery guarantees: one run per source at a time, and messages that are safe to deliver twice."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from celery import chain
from flask import Flask
from sqlalchemy import func, select, text

from kasparro import catalog
from kasparro.errors import SourceConfigError
from kasparro.db import db
from kasparro.models import MarketQuote, Run, SourceRun
from kasparro.pipeline import leases, runs
from kasparro.tasks import enqueue_run, extract, load, reap_stalled, transform
from tests.conftest import wait_for_run
from tests.pipeline.helpers import HEADER, csv_spec, declare, quote_count, run_now

ROWS = "".join(f"bitcoin,2019-04-{day:02d},{5000 + day}.5,1000,2000\n" for day in range(1, 29))


@pytest.fixture
def daily(sources_file: Path, tmp_path: Path) -> Path:
    path = tmp_path / "daily.csv"
    path.write_text(HEADER + ROWS)
    declare(sources_file, {"daily": csv_spec(path)})
    return path


def test_a_trigger_while_a_run_is_active_returns_that_run(app: Flask, daily: Path) -> None:
    with app.app_context():
        specs = catalog.select_sources(app.config, None)
        active, _ = runs.create_run(db.session, "schedule", specs)
        db.session.commit()

        run, created = enqueue_run("api")

        assert (run.id, created) == (active.id, False)


def test_the_same_idempotency_key_returns_the_same_run(app: Flask, daily: Path) -> None:
    with app.app_context():
        specs = catalog.select_sources(app.config, None)
        first, created_first = runs.create_run(db.session, "api", specs, idempotency_key="abc")
        db.session.commit()
        first.status = "success"
        db.session.commit()

        again, created_again = runs.create_run(db.session, "api", specs, idempotency_key="abc")

        assert created_first and not created_again
        assert again.id == first.id


def test_a_key_answered_with_a_reused_run_still_gets_that_run_after_it_ends(app: Flask, daily: Path) -> None:
    with app.app_context():
        specs = catalog.select_sources(app.config, None)
        active, _ = runs.create_run(db.session, "schedule", specs)
        reused, created = runs.create_run(db.session, "api", specs, idempotency_key="retry-me")
        db.session.commit()
        active.status = "success"
        db.session.commit()

        retried, created_again = runs.create_run(db.session, "api", specs, idempotency_key="retry-me")

        assert (reused.id, created, retried.id, created_again) == (active.id, False, active.id, False)


@pytest.mark.usefixtures("worker")
def test_a_source_leased_to_another_run_waits_until_the_lease_ends(app: Flask, daily: Path) -> None:
    lease_ends = datetime.now(timezone.utc) + timedelta(seconds=3)
    with app.app_context():
        db.session.execute(text("INSERT INTO source_leases (source, run_id, expires_at) VALUES ('daily', 999, :e)"),
                           {"e": lease_ends})
        db.session.commit()

    run = run_now(app, timeout=90)

    assert run.status == "success"
    with app.app_context():
        first_loaded = db.session.execute(select(func.min(MarketQuote.ingested_at))).scalar_one()
    assert first_loaded >= lease_ends


@pytest.mark.usefixtures("worker")
def test_every_stage_delivered_twice_loads_each_row_once(app: Flask, daily: Path) -> None:
    with app.app_context():
        run, _ = runs.create_run(db.session, "cli", catalog.select_sources(app.config, None))
        db.session.commit()
        run_id, source_run_id = run.id, run.source_runs[0].id
    # Two full chains for one source run, racing: what a redelivery after a
    # visibility timeout, or a duplicated publish, looks like to the workers.
    for _ in range(2):
        chain(extract.si(source_run_id), transform.si(source_run_id), load.si(source_run_id)).apply_async()

    finished = wait_for_run(app, run_id)

    assert finished.status == "success"
    assert quote_count(app) == 28
    with app.app_context():
        source_run = db.session.get(SourceRun, source_run_id)
        assert (source_run.extracted, source_run.inserted, source_run.loaded) == (28, 28, 28)


@pytest.mark.usefixtures("worker")
def test_a_finished_source_run_ignores_a_late_duplicate(app: Flask, daily: Path) -> None:
    run = run_now(app)
    source_run_id = run.source_runs[0].id

    late = chain(extract.si(source_run_id), transform.si(source_run_id),
                 load.si(source_run_id).set(ignore_result=False)).apply_async()
    late.get(timeout=30)

    assert quote_count(app) == 28
    with app.app_context():
        assert db.session.get(SourceRun, source_run_id).inserted == 28


def test_the_reaper_frees_sources_whose_worker_vanished(app: Flask, daily: Path) -> None:
    with app.app_context():
        specs = catalog.select_sources(app.config, None)
        never_picked, _ = runs.create_run(db.session, "schedule", specs)
        db.session.execute(text("UPDATE runs SET created_at = now() - interval '2 hours' WHERE id = :r"),
                           {"r": never_picked.id})
        db.session.commit()
        run_id = never_picked.id

        reap_stalled.run()

        db.session.expire_all()
        (source_run,) = db.session.get(Run, run_id).source_runs
        assert source_run.status == "failed" and "stalled" in source_run.error
        assert db.session.get(Run, run_id).status == "failed"
        fresh, created = runs.create_run(db.session, "api", specs)
        assert created and fresh.id != run_id


def test_the_reaper_leaves_a_run_that_is_making_progress(app: Flask, daily: Path) -> None:
    with app.app_context():
        specs = catalog.select_sources(app.config, None)
        run, _ = runs.create_run(db.session, "schedule", specs)
        db.session.commit()
        source_run = run.source_runs[0]
        leases.acquire(db.session, "daily", run.id, 600)
        runs.start_source(db.session, source_run)
        db.session.commit()

        assert reap_stalled.run() == []


def test_a_run_with_no_enabled_source_is_refused_not_left_queued(app: Flask, sources_file: Path) -> None:
    sources_file.write_text("# nothing declared\n")

    with app.app_context(), pytest.raises(SourceConfigError, match="no sources are enabled"):
        enqueue_run("schedule")
    with app.app_context():
        assert db.session.execute(select(func.count()).select_from(Run)).scalar_one() == 0
