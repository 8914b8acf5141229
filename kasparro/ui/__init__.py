"""The status page: HTML views over the API's own query functions, with server-side SVG charts.

`/` shows a tile per source, the last runs and one asset's price per source; `/ui/runs/<id>` and
`/ui/assets/<slug>` show one run or one asset. Each page re-renders its live part as a fragment
(`?partial=1`) that kasparro/static/ui/live.js swaps in every few seconds; without JavaScript the
page is plain tables. Nothing is loaded from another host, and the Content-Security-Policy says so.
"""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the status page views and their HTML error pages."""
    from kasparro.ui import views

    app.register_blueprint(views.bp)
