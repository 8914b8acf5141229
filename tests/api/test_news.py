"""GET /news and the news on /assets/<slug>, over items inserted through the factories."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask.testing import FlaskClient

from kasparro.db import db
from tests.api import factories as f
from tests.api.factories import T0


def _seed() -> None:
    btc = f.asset("bitcoin", "BTC", "Bitcoin")
    sol = f.asset("solana", "SOL", "Solana")
    run = f.run(sources=("wire", "desk"))
    wire, desk = (f.batch(sr) for sr in run.source_runs)
    for hour in range(4):
        f.news(wire, f"w{hour}", T0 + timedelta(hours=hour), f"Bitcoin hour {hour}", "wire",
               ((btc, "name", "Bitcoin"),))
    f.news(desk, "d0", T0 + timedelta(minutes=30), "SOL and $BTC", "desk",
           ((btc, "cashtag", "$BTC"), (sol, "ticker", "SOL")))
    f.news(desk, "d1", T0 + timedelta(minutes=90), "Markets wait", "desk")
    db.session.commit()


def _titles(response: Any) -> list[str]:
    assert response.status_code == 200, response.get_json()
    return [row["title"] for row in response.get_json()["data"]]


def test_news_lists_items_newest_first_with_their_links_and_lineage(client: FlaskClient, session: Any) -> None:
    _seed()

    body = client.get("/news").get_json()

    assert [row["title"] for row in body["data"]] == ["Bitcoin hour 3", "Bitcoin hour 2", "Markets wait",
                                                     "Bitcoin hour 1", "SOL and $BTC", "Bitcoin hour 0"]
    mixed = body["data"][-2]
    assert mixed["assets"] == [{"asset": "bitcoin", "symbol": "BTC", "matched_by": "cashtag", "matched_text": "$BTC"},
                               {"asset": "solana", "symbol": "SOL", "matched_by": "ticker", "matched_text": "SOL"}]
    assert mixed["raw_record_id"] > 0 and mixed["feed"] == "desk"
    assert body["meta"]["filters"] == {}


def test_news_filters_by_asset_feed_and_time_window(client: FlaskClient, session: Any) -> None:
    _seed()

    assert _titles(client.get("/news?asset=solana")) == ["SOL and $BTC"]
    assert len(_titles(client.get("/news?asset=bitcoin"))) == 5
    assert _titles(client.get("/news?feed=desk")) == ["Markets wait", "SOL and $BTC"]
    assert _titles(client.get("/news?asset=bitcoin&feed=desk")) == ["SOL and $BTC"]
    window = f"since={(T0 + timedelta(hours=1)).isoformat()}&until={(T0 + timedelta(hours=3)).isoformat()}"
    assert _titles(client.get("/news?" + window.replace("+", "%2B"))) == ["Bitcoin hour 2", "Markets wait",
                                                                          "Bitcoin hour 1"]
    assert _titles(client.get("/news?asset=no-such-coin")) == []


def test_news_pages_by_keyset_without_gaps_or_repeats(client: FlaskClient, session: Any) -> None:
    _seed()
    seen: list[str] = []
    url = "/news?limit=2"
    while url:
        body = client.get(url).get_json()
        seen += [row["guid"] for row in body["data"]]
        cursor = body["meta"]["next_cursor"]
        url = f"/news?limit=2&cursor={cursor}" if cursor else ""

    assert seen == ["w3", "w2", "d1", "w1", "d0", "w0"]
    assert client.get(f"/news?feed=desk&cursor={cursor or 'x' * 20}").status_code == 400


def test_bad_news_parameters_answer_400_naming_the_field(client: FlaskClient, session: Any) -> None:
    assert client.get("/news?since=2024-01-02T00:00:00Z&until=2024-01-01T00:00:00Z").get_json()["error"]["fields"] \
        == {"until": ["must be later than since"]}
    assert "topic" in client.get("/news?topic=x").get_json()["error"]["fields"]


def test_an_asset_shows_its_latest_news(client: FlaskClient, session: Any) -> None:
    _seed()

    news = client.get("/assets/solana").get_json()["data"]["news"]
    bitcoin = client.get("/assets/bitcoin").get_json()["data"]["news"]

    assert news == [{"title": "SOL and $BTC", "link": "https://news.example.org/d0", "feed": "desk",
                     "published_at": (T0 + timedelta(minutes=30)).isoformat(), "matched_by": "ticker"}]
    assert [item["title"] for item in bitcoin] == ["Bitcoin hour 3", "Bitcoin hour 2", "Bitcoin hour 1",
                                                   "SOL and $BTC", "Bitcoin hour 0"]
