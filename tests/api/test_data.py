"""GET /data, /data/latest, /assets and /assets/<slug> over quotes inserted through the factories."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.dialects import postgresql

from kasparro.api.data import build_quotes_query, quote_filters
from kasparro.db import db
from kasparro.pipeline import partitions
from tests.api import factories as f
from tests.api.factories import T0


def _seed() -> dict[str, Any]:
    btc = f.asset("bitcoin", "BTC", "Bitcoin", coingecko="bitcoin", coinpaprika="btc-bitcoin")
    eth = f.asset("ethereum", "ETH", "Ethereum", coingecko="ethereum")
    f.asset("dogecoin", "DOGE", "Dogecoin")
    run = f.run(sources=("coingecko", "coinpaprika"))
    gecko, paprika = (f.batch(sr) for sr in run.source_runs)
    for hour in range(3):
        f.quote(btc, gecko, T0 + timedelta(hours=hour), 40000 + hour, market_cap_usd=8e11)
        f.quote(eth, gecko, T0 + timedelta(hours=hour), 2000 + hour)
    f.quote(btc, paprika, T0 + timedelta(minutes=30), 40100, volume_24h_usd=3e10, percent_change_24h=1.5)
    db.session.commit()
    return {"run_id": run.id}


def _prices(response: Any) -> list[float]:
    return [row["price_usd"] for row in response.get_json()["data"]]


def test_data_lists_unified_quotes_newest_first_with_lineage_and_meta(client: FlaskClient, session: Any) -> None:
    seeded = _seed()

    response = client.get("/data", headers={"X-Request-ID": "trace-123"})

    body = response.get_json()
    assert response.status_code == 200
    assert [row["observed_at"] for row in body["data"]] == sorted((r["observed_at"] for r in body["data"]),
                                                                  reverse=True)
    first = body["data"][0]
    assert set(first) == {"id", "asset", "symbol", "name", "source", "observed_at", "price_usd", "market_cap_usd",
                          "volume_24h_usd", "percent_change_24h", "raw_record_id", "raw_chunk_id", "raw_line", "run_id",
                          "ingested_at"}
    assert first["run_id"] == seeded["run_id"] and first["raw_record_id"] > 0
    assert first["raw_chunk_id"] is None and first["raw_line"] is None  # an API's quote: its lineage is a record
    assert body["meta"]["request_id"] == "trace-123" == response.headers["X-Request-ID"]
    assert body["meta"]["api_latency_ms"] >= 0
    assert body["meta"] | {"api_latency_ms": 0} == {
        "request_id": "trace-123", "api_latency_ms": 0, "filters": {"sort": "-observed_at"}, "limit": 100,
        "next_cursor": None, "has_more": False}


def test_data_filters_by_asset_symbol_source_and_time_window(client: FlaskClient, session: Any) -> None:
    _seed()

    assert _prices(client.get("/data?asset=bitcoin&source=coingecko&sort=observed_at")) == [40000, 40001, 40002]
    assert _prices(client.get("/data?symbol=eth")) == [2002, 2001, 2000]
    assert _prices(client.get("/data?source=coinpaprika")) == [40100]
    window = client.get("/data?asset=bitcoin&since=2024-01-01T00:30:00Z&until=2024-01-01T02:00:00%2B00:00")
    assert _prices(window) == [40001, 40100]
    assert window.get_json()["meta"]["filters"]["since"] == "2024-01-01T00:30:00+00:00"
    far_offset = client.get("/data?asset=bitcoin&since=2024-01-01T00:30:00-20:04")
    assert far_offset.status_code == 200 and far_offset.get_json()["data"] == []
    assert client.get("/data?asset=no-such-coin").get_json()["data"] == []


def test_cursor_walk_visits_every_row_exactly_once_in_both_directions(client: FlaskClient, session: Any) -> None:
    f.bulk_quotes(257, assets=7)
    db.session.commit()

    for sort in ("-observed_at", "observed_at"):
        seen, url, pages = [], f"/data?limit=50&sort={sort}", 0
        while url:
            body = client.get(url).get_json()
            seen += [row["id"] for row in body["data"]]
            pages += 1
            cursor = body["meta"]["next_cursor"]
            assert body["meta"]["has_more"] is (cursor is not None)
            url = f"/data?limit=50&sort={sort}&cursor={cursor}" if cursor else None
        assert pages == 6
        assert len(seen) == len(set(seen)) == 257


def test_cursor_walk_across_a_months_edge_visits_every_row_once_in_order_in_both_directions(
        client: FlaskClient, session: Any) -> None:
    # January and February 2024 are partitions of their own (market_quotes is partitioned by month), and the
    # walk's pages end on either side of the edge and on it, with ties in observed_at broken by id.
    partitions.ensure_partitions(db.session, 1, now=T0)
    coins = [f.asset(f"coin-{n}") for n in range(3)]
    batch = f.batch(f.run(sources=("bulk",)).source_runs[0])
    edge = datetime(2024, 2, 1, tzinfo=timezone.utc)
    for minutes in range(-4, 4):
        for coin in coins:
            f.quote(coin, batch, edge + timedelta(minutes=minutes), 100)
    db.session.commit()
    homes = db.session.execute(text("SELECT DISTINCT tableoid::regclass::text FROM market_quotes")).scalars()
    expected = db.session.execute(text("SELECT id FROM market_quotes ORDER BY observed_at, id")).scalars().all()

    walks = {}
    for sort in ("observed_at", "-observed_at"):
        seen, url = [], f"/data?limit=5&sort={sort}"
        while url:
            body = client.get(url).get_json()
            seen += [row["id"] for row in body["data"]]
            cursor = body["meta"]["next_cursor"]
            url = f"/data?limit=5&sort={sort}&cursor={cursor}" if cursor else None
        walks[sort] = seen

    assert sorted(homes) == ["market_quotes_2024_01", "market_quotes_2024_02"]
    assert walks == {"observed_at": expected, "-observed_at": expected[::-1]}


def test_a_page_reads_no_partition_of_the_months_the_walk_already_passed(app: Flask, session: Any) -> None:
    partitions.ensure_partitions(db.session, 1, now=T0)  # January and February 2024
    january, february = (datetime(2024, month, 15, tzinfo=timezone.utc) for month in (1, 2))

    def scanned(sort: str, after: datetime) -> str:
        query = build_quotes_query(quote_filters({"sort": sort}), 100, (after, 10))
        sql = str(query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
        return "\n".join(row[0] for row in db.session.execute(text("EXPLAIN " + sql)))

    newest_first, oldest_first = scanned("-observed_at", january), scanned("observed_at", february)

    assert "market_quotes_2024_01" in newest_first and "market_quotes_2024_02" not in newest_first
    assert "market_quotes_2024_02" in oldest_first and "market_quotes_2024_01" not in oldest_first


def test_a_cursor_used_with_other_filters_is_refused(client: FlaskClient, session: Any) -> None:
    _seed()
    cursor = client.get("/data?limit=2&source=coingecko").get_json()["meta"]["next_cursor"]

    response = client.get(f"/data?limit=2&source=coinpaprika&cursor={cursor}")

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "validation_error"
    assert "cursor" in response.get_json()["error"]["fields"]
    assert client.get(f"/data?limit=2&source=coingecko&cursor={cursor}").status_code == 200


def test_page_deep_in_data_is_an_index_scan_without_offset(app: Flask, session: Any) -> None:
    f.bulk_quotes(20_000)
    db.session.commit()
    after = (T0 + timedelta(minutes=15_000), 15_000)

    for filters in ({"sort": "-observed_at"}, {"sort": "observed_at"}, {"asset": "coin-3", "sort": "-observed_at"},
                    {"source": "bulk", "since": T0, "sort": "-observed_at"}):
        query = build_quotes_query(quote_filters(filters), 100, after)
        sql = str(query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
        plan = "\n".join(row[0] for row in db.session.execute(text("EXPLAIN " + sql)))

        assert "OFFSET" not in sql.upper()
        assert "Index Scan" in plan or "Index Only Scan" in plan, plan
        assert "Seq Scan on market_quotes" not in plan, plan


def test_latest_gives_each_assets_newest_quote_optionally_per_source(client: FlaskClient, session: Any) -> None:
    _seed()

    latest = client.get("/data/latest").get_json()["data"]
    from_paprika = client.get("/data/latest?source=coinpaprika").get_json()["data"]

    assert {(row["asset"], row["price_usd"]) for row in latest} == {("bitcoin", 40002), ("ethereum", 2002)}
    assert [(row["asset"], row["source"], row["price_usd"]) for row in from_paprika] == [
        ("bitcoin", "coinpaprika", 40100)]
    first = client.get("/data/latest?limit=1").get_json()
    second = client.get(f"/data/latest?limit=1&cursor={first['meta']['next_cursor']}").get_json()
    assert [first["data"][0]["asset"], second["data"][0]["asset"]] == ["bitcoin", "ethereum"]
    assert second["meta"]["has_more"] is False


def test_assets_are_paged_by_slug(client: FlaskClient, session: Any) -> None:
    _seed()

    page = client.get("/assets?limit=2").get_json()
    rest = client.get(f"/assets?limit=2&cursor={page['meta']['next_cursor']}").get_json()

    assert [a["slug"] for a in page["data"] + rest["data"]] == ["bitcoin", "dogecoin", "ethereum"]
    assert rest["meta"]["next_cursor"] is None


def test_assets_are_found_by_symbol_and_by_name_or_slug(client: FlaskClient, session: Any) -> None:
    for slug, symbol, name in [("bitcoin", "BTC", "Bitcoin"), ("bitcoin-cash", "BCH", "Bitcoin Cash"),
                               ("wrapped-bitcoin", "WBTC", "Wrapped BTC"), ("ethereum", "ETH", "Ethereum"),
                               ("usd-coin", "USDC", "USD Coin"), ("usd1", "usd1", "USD1 100% backed")]:
        f.asset(slug, symbol, name)
    session.commit()

    def slugs(query: str) -> list[str]:
        response = client.get(f"/assets?{query}")
        assert response.status_code == 200, response.get_json()
        return [a["slug"] for a in response.get_json()["data"]]

    assert slugs("symbol=btc") == ["bitcoin"]
    assert slugs("symbol=USD1") == ["usd1"]
    assert slugs("q=BITCOIN") == ["bitcoin", "bitcoin-cash", "wrapped-bitcoin"]
    assert slugs("q=btc") == ["wrapped-bitcoin"]  # a name match; symbols are symbol=
    assert slugs("q=d-c") == ["usd-coin"]  # a slug match
    assert slugs("q=100%25") == ["usd1"] and slugs("q=_") == []  # LIKE wildcards match only themselves
    assert slugs("q=coin&symbol=BCH") == ["bitcoin-cash"]
    first = client.get("/assets?q=coin&limit=2").get_json()
    rest = client.get(f"/assets?q=coin&limit=2&cursor={first['meta']['next_cursor']}").get_json()
    assert [a["slug"] for a in first["data"] + rest["data"]] == [
        "bitcoin", "bitcoin-cash", "usd-coin", "wrapped-bitcoin"]
    assert client.get(f"/assets?q=eth&cursor={first['meta']['next_cursor']}").status_code == 400
    assert client.get("/assets?q=" + "x" * 101).status_code == 400
    assert client.get("/assets?q=").status_code == 400


def test_asset_detail_lists_aliases_and_sources_with_quotes(client: FlaskClient, session: Any) -> None:
    _seed()

    body = client.get("/assets/bitcoin").get_json()["data"]

    assert body["slug"] == "bitcoin" and body["symbol"] == "BTC"
    assert [(a["source"], a["source_asset_id"], a["match_method"]) for a in body["aliases"]] == [
        ("coingecko", "bitcoin", "exact_id"), ("coinpaprika", "btc-bitcoin", "exact_id")]
    assert [(s["source"], s["quotes"]) for s in body["quote_sources"]] == [("coingecko", 3), ("coinpaprika", 1)]
    assert client.get("/assets/dogecoin").get_json()["data"]["quote_sources"] == []


def test_unknown_asset_is_a_json_404(client: FlaskClient, session: Any) -> None:
    response = client.get("/assets/nope")

    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
