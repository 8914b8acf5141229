"""The status page over the test client: pages render from the API's figures, errors are HTML pages, keys stay out."""
from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

from flask import Flask, render_template
from flask.testing import FlaskClient

from kasparro.db import db
from tests.api import factories as f
from tests.api.conftest import AUTH


def _seed(app: Flask) -> dict[str, int]:
    with app.app_context():
        btc = f.asset("bitcoin", "BTC", "Bitcoin", alpha="btc-bitcoin", beta="Bitcoin")
        first = f.run("success", sources=("alpha", "beta"), loaded=2)
        second = f.run("failed", sources=("alpha", "beta"), started=f.T0 + timedelta(hours=1))
        second.source_runs[0].error = "file not found: <missing.csv>"
        for source_run in first.source_runs:
            batch = f.batch(source_run)
            for hour in range(3):
                f.quote(btc, batch, f.T0 + timedelta(hours=hour), price=100 + hour + len(source_run.source))
        db.session.commit()
        return {"first": first.id, "second": second.id}


def test_the_front_page_shows_tiles_runs_and_a_chart_per_source(app: Flask, client: FlaskClient) -> None:
    ids = _seed(app)
    page = client.get("/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert re.search(rf'class="run status-failed" href="/ui/runs/{ids["second"]}"[^>]*>#{ids["second"]} failed</a>', html)
    assert set(re.findall(r'class="series (serie-\d+)', html)) == {"serie-0", "serie-1"}, "a line per source"
    assert 'role="img" aria-label="Price of bitcoin in USD by source. alpha: 3 prices' in html
    assert "<script" not in html.split("</head>")[1], "no inline script: the CSP allows only the app's own files"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]


def test_the_live_fragment_is_the_page_without_its_frame(app: Flask, client: FlaskClient) -> None:
    _seed(app)
    fragment = client.get("/?partial=1").get_data(as_text=True)
    assert 'id="sources-title"' in fragment and "<html" not in fragment and 'id="queue-form"' not in fragment


def test_a_run_page_shows_errors_and_the_comparison_with_the_previous_run(app: Flask, client: FlaskClient) -> None:
    ids = _seed(app)
    html = client.get(f"/ui/runs/{ids['second']}").get_data(as_text=True)
    assert "file not found: &lt;missing.csv&gt;" in html, "error text shown, and escaped"
    assert f"Against the previous run, <a href=\"/ui/runs/{ids['first']}\">" in html
    assert "status regressed" in html


def test_an_asset_page_shows_aliases_with_their_match_and_the_latest_quote_per_source(
        app: Flask, client: FlaskClient) -> None:
    _seed(app)
    html = client.get("/ui/assets/bitcoin").get_data(as_text=True)
    assert re.search(r"<th scope=.row.>alpha</th><td>btc-bitcoin</td>.*?<td>exact_id</td>", html, re.DOTALL)
    assert "107.00" in html and "106.00" in html, "each source's newest price (102 + length of its name)"


def test_unknown_runs_and_assets_get_an_html_404_while_the_api_keeps_json(app: Flask, client: FlaskClient) -> None:
    for url in ("/ui/runs/999", "/ui/runs/abc", "/ui/runs/99999999999999999999", "/ui/assets/no-such-coin"):
        page = client.get(url)
        assert page.status_code == 404 and page.mimetype == "text/html", url
        assert "<h1>404 — Not found</h1>" in page.get_data(as_text=True)
    assert client.get("/runs/999").get_json()["error"]["code"] == "not_found"


def test_the_page_never_carries_the_api_key(app: Flask, client: FlaskClient) -> None:
    _seed(app)
    for url in ("/", "/ui/assets/bitcoin", "/ui/runs/1"):
        page = client.get(url, headers=AUTH)
        html = page.get_data(as_text=True)
        assert AUTH["X-API-Key"] not in html and "Set-Cookie" not in page.headers
        assert re.search(r'<input id="api-key" type="password" autocomplete="off"', html), url


def test_the_status_page_is_not_in_the_openapi_document(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    assert not [path for path in paths if path == "/" or path.startswith("/ui")]


def test_read_progress_and_news_show_when_the_api_reports_them(app: Flask) -> None:
    counters = dict.fromkeys(("extracted", "loaded", "inserted", "updated", "rejected", "duplicates", "skipped"), 0)
    source_run = {"source": "alpha", "status": "running", "stage": "extract", "error": None, **counters,
                  "progress": {"batches_extracted": 3, "batches_transformed": 2, "batches_loaded": 1, "stage": "extract",
                               "unit": "bytes", "done": 500, "total": 2000, "percent": 25.0, "eta_seconds": 30.4}}
    run = {"id": 7, "status": "running", "trigger": "api", "created_at": f.T0, "finished_at": None,
           "duration_seconds": 10.0, "error": None, "source_runs": [source_run], "drift": [], "anomalies": [],
           "events": []}
    news = [{"title": "Bitcoin <rallies>", "link": "https://news.example/btc", "feed": "coindesk",
             "published_at": f.T0, "matched_by": "name"},
            {"title": "Sneaky", "link": "javascript:alert(1)", "feed": "x", "published_at": None, "matched_by": "symbol"}]
    asset = {"slug": "bitcoin", "name": "Bitcoin", "symbol": "BTC", "aliases": []}
    with app.test_request_context("/"):
        run_html = render_template("ui/_run.html", run=run, comparison=None)
        asset_html = render_template("ui/_asset.html", asset=asset, latest=[], chart=None, news=news)
    assert '<progress max="100" value="25.0"' in run_html and "500 of 2000 bytes (25.0 %), about 30 s left" in run_html
    assert "<dt>batches loaded</dt><dd>1</dd>" in run_html
    assert '<a href="https://news.example/btc" rel="noopener noreferrer">Bitcoin &lt;rallies&gt;</a>' in asset_html
    assert "javascript:" not in asset_html and "Sneaky" in asset_html and "matched by name" in asset_html


def test_the_page_is_closed_when_reads_need_the_key(make_app: Callable[..., Flask]) -> None:
    closed = make_app(READS_REQUIRE_KEY=True).test_client()
    page = closed.get("/")
    assert page.status_code == 401 and page.mimetype == "text/html"
    assert "a valid X-API-Key header is required" in page.get_data(as_text=True)
    assert closed.get("/", headers=AUTH).status_code == 200
