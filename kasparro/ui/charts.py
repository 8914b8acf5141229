"""Draw one asset's price from every source on one time axis, as inline SVG with a table behind it."""
from __future__ import annotations

import re
from collections import defaultdict
from datetime import datetime
from typing import Any

import pygal
from markupsafe import Markup, escape
from pygal.style import Style
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import distinct_on

from kasparro.db import db
from kasparro.models import MarketQuote

# Enough points per source to show a trend without shipping a megabyte of SVG every refresh.
POINTS_PER_SOURCE = 400
# The table under the chart lists the newest prices only; /data has them all.
TABLE_ROWS = 60
# pygal writes its config into an inline <script> for its optional tooltips; the page's CSP refuses
# inline scripts, so it is dropped rather than left to log a violation on every refresh.
_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>", re.DOTALL)
# Dark, distinguishable colours that keep 4.5:1 against the white chart background.
STYLE = Style(background="#ffffff", plot_background="#ffffff", foreground="#1a1a1a",
              foreground_strong="#1a1a1a", foreground_subtle="#595959",
              colors=("#1f5fa8", "#b3261e", "#1b6e36", "#7a3e9d", "#8a5a00", "#006d77"),
              font_family="system-ui, sans-serif", opacity="1", opacity_hover="1")


def price_series(asset_id: int) -> dict[str, list[tuple[datetime, float]]]:
    """Return each source's latest prices for one asset, oldest first."""
    rank = func.row_number().over(partition_by=MarketQuote.source,
                                  order_by=MarketQuote.observed_at.desc()).label("rank")
    ranked = select(MarketQuote.source, MarketQuote.observed_at, MarketQuote.price_usd, rank) \
        .where(MarketQuote.asset_id == asset_id).subquery()
    rows = db.session.execute(
        select(ranked.c.source, ranked.c.observed_at, ranked.c.price_usd)
        .where(ranked.c.rank <= POINTS_PER_SOURCE).order_by(ranked.c.source, ranked.c.observed_at)).all()
    series: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    for source, observed_at, price in rows:
        if price is not None:
            series[source].append((observed_at, float(price)))
    return dict(series)


def latest_per_source(asset_id: int) -> list[Any]:
    """Return the newest quote of one asset from each source."""
    return list(db.session.execute(
        select(MarketQuote).where(MarketQuote.asset_id == asset_id).ext(distinct_on(MarketQuote.source))
        .order_by(MarketQuote.source, MarketQuote.observed_at.desc(), MarketQuote.id.desc())).scalars())


def describe(slug: str, series: dict[str, list[tuple[datetime, float]]]) -> str:
    """Say in words what the chart shows, for screen readers and as its caption."""
    if not series:
        return f"No prices recorded for {slug} yet."
    parts = [f"{source}: {len(points)} prices from {points[0][0]:%Y-%m-%d} to {points[-1][0]:%Y-%m-%d}, "
             f"last {points[-1][1]:,.2f} USD" for source, points in sorted(series.items())]
    return f"Price of {slug} in USD by source. " + "; ".join(parts) + "."


def render_svg(slug: str, series: dict[str, list[tuple[datetime, float]]]) -> Markup:
    """Render the series as one inline SVG line chart with a text alternative."""
    # Dots as well as lines: a source with one quote in the window has no line to draw.
    chart = pygal.DateTimeLine(js=[], disable_xml_declaration=True, style=STYLE, width=900, height=380,
                               title=f"{slug}: price in USD by source", x_label_rotation=20, show_dots=True, dots_size=3,
                               legend_at_bottom=True, truncate_legend=-1, x_value_formatter=_day,
                               stroke_style={"width": 2})
    for source, points in sorted(series.items()):
        chart.add(source, points)
    svg = _SCRIPT.sub("", chart.render(is_unicode=True))
    label = escape(describe(slug, series))
    return Markup(svg.replace("<svg ", f'<svg role="img" aria-label="{label}" ', 1))


def _day(value: datetime) -> str:
    return f"{value:%Y-%m-%d}"


def price_chart(asset_id: int, slug: str) -> dict[str, Any]:
    """Return what the chart partial needs: the SVG, its description and the table behind it."""
    series = price_series(asset_id)
    table = sorted(((source, at, price) for source, points in series.items() for at, price in points),
                   key=lambda row: (row[1], row[0]), reverse=True)[:TABLE_ROWS]
    return {"slug": slug, "sources": sorted(series), "svg": render_svg(slug, series) if series else None,
            "description": describe(slug, series), "table": table}
