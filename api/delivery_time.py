"""When a notification falls due: recipient-local wall-clock times and appropriate hours."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

UTC = dt.UTC


@dataclass(frozen=True)
class Plan:
    """The instant asked for, whether it lies in appropriate hours, and when delivery is due."""

    scheduled_time: dt.datetime
    appropriate_delivery: bool
    due_at: dt.datetime


def resolve_local(wall_time: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """The UTC instant of a wall-clock time in ``zone``.

    A time that occurs twice (DST fold) is its first occurrence; a time that does not exist
    (DST gap) is read with the offset in force before the gap, which moves it forward by the
    gap's length (02:30 on a spring-forward night becomes 03:30), as most calendars do.
    """
    return wall_time.replace(tzinfo=zone, fold=0).astimezone(UTC)


def to_instant(requested: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """A requested time as a UTC instant: with an offset it is that instant, without one it is local."""
    if requested.tzinfo is None or requested.utcoffset() is None:
        return resolve_local(requested, zone)
    return requested.astimezone(UTC)


def in_appropriate_hours(instant: dt.datetime, zone: ZoneInfo, start: int, end: int) -> bool:
    """Whether the local time of ``instant`` lies in [start:00, end:00)."""
    return start <= instant.astimezone(zone).hour < end


def next_appropriate_time(instant: dt.datetime, zone: ZoneInfo, start: int, end: int) -> dt.datetime:
    """``instant`` itself when it lies in appropriate hours, else the next local ``start:00`` after it."""
    if in_appropriate_hours(instant, zone, start, end):
        return instant
    local_day = instant.astimezone(zone).date()
    # Two days always suffice: today's start if still ahead, else tomorrow's. A third covers zones
    # that skipped a whole calendar day (Pacific/Apia at the end of 2011).
    for days_ahead in range(3):
        wall = dt.datetime.combine(local_day + dt.timedelta(days=days_ahead), dt.time(start))
        candidate = resolve_local(wall, zone)
        if candidate > instant:
            return candidate
    raise AssertionError("unreachable: appropriate hours start within three days")


def plan_delivery(
    requested: dt.datetime | None,
    zone: ZoneInfo,
    *,
    now: dt.datetime,
    start: int,
    end: int,
) -> Plan:
    """Plan a notification: a missing or past ``requested`` time means as soon as possible."""
    scheduled = now if requested is None else to_instant(requested, zone)
    earliest = max(scheduled, now)
    return Plan(
        scheduled_time=scheduled,
        appropriate_delivery=in_appropriate_hours(scheduled, zone, start, end),
        due_at=next_appropriate_time(earliest, zone, start, end),
    )
