"""Build the paginator `[paginate]` declares for one series, starting from the series' `{since}` where it can."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kasparro.sources import paginate


def build_paginator(settings: Mapping[str, Any], since: Any) -> paginate.Paginator:
    """Return the paginator of checked `settings`; a time window starts at `since`, a backward cursor stops there."""
    kind = settings["type"]
    if kind == "page":
        return paginate.PageNumber(settings["page_param"], settings.get("start", 1), settings.get("page_size"))
    if kind == "offset":
        return paginate.OffsetLimit(settings["offset_param"], settings["limit_param"], settings["limit"],
                                    settings.get("start", 0), settings.get("total_path"))
    if kind == "cursor":
        floor = since if settings.get("floor_from_checkpoint") and isinstance(since, int | float) else None
        return paginate.BodyCursor(settings["next_cursor_path"], settings["cursor_param"],
                                   settings.get("cursor_adjust", 0), floor, settings.get("start"))
    if kind == "next_url":
        return paginate.NextUrl(settings["next_url_path"])
    if kind == "link":
        return paginate.LinkHeader()
    if kind == "time":
        start = since if isinstance(since, int) and not isinstance(since, bool) else settings["start"]
        return paginate.TimeWindow(settings["start_param"], settings["end_param"], settings["window"], start,
                                   settings.get("end"), settings.get("unit", "ms"))
    return paginate.Single()
