"""Stacked bar charts as SVG geometry, computed here so the template only draws rectangles."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

STATUS_ORDER = ("delivered", "failed", "cancelled", "processing", "scheduled")


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    height: float
    status: str
    count: int
    label: str


@dataclass(frozen=True)
class Chart:
    channel: str
    bars: list[Bar]
    width: float
    height: float
    peak: int
    start: dt.datetime
    end: dt.datetime


def stacked_hours(
    channel: str,
    counts: dict[tuple[dt.datetime, str], int],
    hours: list[dt.datetime],
    *,
    width: float = 480,
    height: float = 120,
) -> Chart:
    """One bar per hour, stacked by status; ``counts`` maps (hour, status name) to a count."""
    totals = [sum(counts.get((hour, s), 0) for s in STATUS_ORDER) for hour in hours]
    peak = max(totals, default=0) or 1
    step = width / max(1, len(hours))
    bars = []
    for i, hour in enumerate(hours):
        y = height
        for status in STATUS_ORDER:
            count = counts.get((hour, status), 0)
            if not count:
                continue
            h = height * count / peak
            y -= h
            label = f"{hour:%H:00} UTC: {count} {status}"
            bars.append(Bar(round(i * step + 1, 1), round(y, 1), round(h, 1), status, count, label))
    return Chart(channel, bars, width, height, max(totals, default=0), hours[0], hours[-1])
