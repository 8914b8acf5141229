"""The status page in headless Chromium, against a served app whose data a real worker loaded from CSV files."""
from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask

from tests.conftest import ROOT, empty_tables
from tests.pipeline.helpers import csv_spec, declare, run_now
from tests.ui.conftest import screenshot

pytestmark = pytest.mark.usefixtures("loaded")

KAGGLE_COLUMNS = {"source_asset_id": "Name", "symbol": "Symbol", "name": "Name", "observed_at": "Date",
                  "price_usd": "Close", "volume_24h_usd": "Volume", "market_cap_usd": "Marketcap"}
FAILED_RED = "rgb(179, 38, 30)"  # --failed in kasparro/static/ui/style.css


@pytest.fixture(autouse=True)
def _clean_tables() -> None:
    """Keep the module's loaded data from test to test: these tests only read it (the conftest one empties it)."""


@pytest.fixture(scope="module")
def loaded(app: Flask, worker: subprocess.Popen, sources_file: Path) -> Iterator[dict[str, int]]:
    """Load both shipped CSV files and a source whose file is missing with the real worker: one partial, one failed run."""
    original = sources_file.read_text()
    empty_tables(app)
    declare(sources_file, {
        "csv_daily_2019": csv_spec(ROOT / "data" / "csv" / "coins_daily_2019.csv",
                                   {"source_asset_id": "currency", "observed_at": "date", "price_usd": "close",
                                    "volume_24h_usd": "volume", "market_cap_usd": "market_cap"}),
        "csv_kaggle_2021": csv_spec(ROOT / "data" / "csv" / "kaggle_coins_2021.csv", KAGGLE_COLUMNS),
        "csv_missing": csv_spec(ROOT / "data" / "csv" / "no-such-file.csv"),
    })
    partial = run_now(app, timeout=120)
    failed = run_now(app, ["csv_missing"], timeout=60)
    assert (partial.status, failed.status) == ("partial", "failed")
    yield {"partial": partial.id, "failed": failed.id}
    sources_file.write_text(original)


def api(base: str, path: str, key: str | None = None, method: str = "GET") -> tuple[int, Any]:
    """Call the served JSON API and return the status and decoded body."""
    request = urllib.request.Request(base + path, method=method, headers={"X-API-Key": key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def open_page(browser: Any, url: str, ready: str = "#live") -> None:
    """Load a page and wait until its live region (and live.js) are there."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 15).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ready)))
    WebDriverWait(browser, 15).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && !document.getElementById('live-note').hidden"))


def tile_figures(browser: Any, source: str) -> dict[str, str]:
    """Read the figures one source's tile shows."""
    return browser.execute_script(
        "const out = {}; document.querySelectorAll(arguments[0]).forEach("
        "dd => out[dd.dataset.field] = dd.textContent.trim().split(/\\s+/)[0]); return out;",
        f'.tile[data-source="{source}"] dd[data-field]')


def test_the_tiles_show_the_counts_stats_gives(browser: Any, served: str) -> None:
    open_page(browser, served + "/")
    _, stats = api(served, "/stats")
    assert {row["source"] for row in stats["data"]["sources"]} == {"csv_daily_2019", "csv_kaggle_2021", "csv_missing"}
    for row in stats["data"]["sources"]:
        shown = tile_figures(browser, row["source"])
        # The findings figure is checked against /anomalies, which counts them apart from the page's code.
        _, found = api(served, f"/anomalies?source={row['source']}&run_id={row['last_run_id']}&limit=1000")
        assert found["meta"]["has_more"] is False
        assert shown == {"loaded": str(row["last_run"]["loaded"]), "rows_total": str(row["rows_total"]),
                         "rejected_total": str(row["rejected_total"]),
                         "drift_events_last_run": str(row["drift_events_last_run"]),
                         "findings": str(len(found["data"])),
                         "waits_last_run": str(row["waits_last_run"])}, row["source"]
    assert int(tile_figures(browser, "csv_daily_2019")["rows_total"]) > 0
    screenshot(browser, "front-page")


def test_a_failed_run_appears_red_and_says_so(browser: Any, served: str, loaded: dict[str, int]) -> None:
    from selenium.webdriver.common.by import By

    open_page(browser, served + "/")
    link = browser.find_element(By.CSS_SELECTOR, f'.timeline a[href="/ui/runs/{loaded["failed"]}"]')
    assert link.text == f"#{loaded['failed']} failed"
    assert link.value_of_css_property("background-color").replace("rgba", "rgb").replace(", 1)", ")") == FAILED_RED
    tile = browser.find_element(By.CSS_SELECTOR, '.tile[data-source="csv_missing"]')
    assert "failed" in tile.find_element(By.CSS_SELECTOR, ".status").text
    assert tile.value_of_css_property("border-left-color").replace("rgba", "rgb").replace(", 1)", ")") == FAILED_RED
    link.click()
    open_page(browser, served + f"/ui/runs/{loaded['failed']}")
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-source="csv_missing"]')
    assert "failed" in row.text and "no-such-file.csv" in row.text, "the source's error is on the run page"
    screenshot(browser, "failed-run")


def test_the_bitcoin_chart_has_one_series_per_source_that_quotes_it(browser: Any, served: str) -> None:
    _, asset = api(served, "/assets/bitcoin")
    quoting = sorted(row["source"] for row in asset["data"]["quote_sources"])
    assert quoting == ["csv_daily_2019", "csv_kaggle_2021"]
    for page in ("/?asset=bitcoin", "/ui/assets/bitcoin"):
        open_page(browser, served + page)
        series = browser.execute_script(
            "return [...new Set([...document.querySelectorAll('.chart-svg g.series')].map(g => g.classList[1]))]")
        legend = browser.execute_script(
            "return [...document.querySelectorAll('.chart-svg .legends .legend text')].map(t => t.textContent)")
        label = browser.execute_script("return document.querySelector('.chart-svg svg').getAttribute('aria-label')")
        assert len(series) == len(quoting) and sorted(legend) == quoting, page
        assert all(source in label for source in quoting), "the text alternative names every source"
    screenshot(browser, "asset-bitcoin")


def test_queueing_with_a_wrong_key_shows_the_401_message_and_keeps_no_key(browser: Any, served: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    open_page(browser, served + "/")
    status, body = api(served, "/run-etl", key="wrong-key", method="POST")
    assert status == 401
    field = browser.find_element(By.ID, "api-key")
    assert field.get_attribute("type") == "password" and field.get_attribute("autocomplete") == "off"
    field.send_keys("wrong-key-typed-in-the-browser")
    browser.find_element(By.CSS_SELECTOR, "#queue-form button[type=submit]").click()
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "queue-result").text.startswith("401"))
    assert browser.find_element(By.ID, "queue-result").text == f"401: {body['error']['message']}"
    assert browser.find_element(By.ID, "queue-result").value_of_css_property("color") \
        .replace("rgba", "rgb").replace(", 1)", ")") == FAILED_RED
    kept = browser.execute_script("return [document.getElementById('api-key').value, localStorage.length, "
                                  "sessionStorage.length, document.cookie, document.documentElement.outerHTML]")
    assert kept[:4] == ["", 0, 0, ""] and "wrong-key-typed" not in kept[4]
    assert "wrong-key-typed" not in browser.current_url
    screenshot(browser, "queue-wrong-key")


def test_pages_refresh_in_place_and_no_request_leaves_the_app(browser: Any, served: str, app: Flask) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get_log("performance")  # start from an empty log
    open_page(browser, served + "/")
    browser.execute_script("window.notReloaded = true")
    newer = run_now(app, ["csv_missing"], timeout=60)
    WebDriverWait(browser, 20).until(lambda d: d.execute_script(
        "return !!document.querySelector(arguments[0])", f'.timeline a[href="/ui/runs/{newer.id}"]'))
    assert browser.execute_script("return window.notReloaded") is True, "the new run arrived without a reload"
    for page in ("/ui/runs/999999", "/ui/runs/1", "/ui/assets/bitcoin"):
        open_page(browser, served + page, ready="main")
    # Wait for one more refresh round on the last page (live.js's fragment request is in the log), not a fixed time.
    events: list[dict[str, Any]] = []
    WebDriverWait(browser, 60).until(lambda d: events.extend(_network(d)) or any(
        urlsplit(url).path == "/ui/assets/bitcoin" and "partial=1" in url for url in _requested(events)))
    urls = _requested(events)
    assert any("partial=1" in url for url in urls), "live.js fetched fragments"
    app_origin = urlsplit(served).netloc
    foreign = [url for url in urls if urlsplit(url).scheme not in ("data", "about", "blob")
               and urlsplit(url).netloc != app_origin]
    assert not foreign
    failed = [e["params"].get("errorText", "") for e in events if e["method"] == "Network.loadingFailed"]
    assert not [error for error in failed if "NAME_NOT_RESOLVED" in error], "nothing tried another host"


def _requested(events: list[dict[str, Any]]) -> list[str]:
    return [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]


def _network(browser: Any) -> list[dict[str, Any]]:
    # Reading the log empties it, so read it once.
    return [json.loads(entry["message"])["message"] for entry in browser.get_log("performance")]
