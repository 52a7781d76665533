"""When a notification falls due: recipient-local wall-clock times, appropriate hours, delivery windows."""

from __future__ import annotations

import datetime as dt
import functools
import math
from dataclasses import dataclass
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

UTC = dt.UTC


class Plan(NamedTuple):
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
    # Two days usually suffice: today's start if still ahead, else tomorrow's. More cover zones that
    # skipped a whole calendar day (Pacific/Apia at the end of 2011), and a day whose hours fall
    # wholly in a clock change's gap (0-1 in Chile/Continental when 00:00 became 01:00): a start
    # moved past the gap may lie outside the hours, and that day has none.
    for days_ahead in range(4):
        candidate = _day_starts(local_day + dt.timedelta(days=days_ahead), start, zone)
        if candidate > instant and in_appropriate_hours(candidate, zone, start, end):
            return candidate
    raise AssertionError("unreachable: appropriate hours start within four days")


@functools.lru_cache(maxsize=4096)
def _day_starts(day: dt.date, start: int, zone: ZoneInfo) -> dt.datetime:
    """The instant appropriate hours start on a local day: the same for every notification of a night."""
    return resolve_local(dt.datetime.combine(day, dt.time(start)), zone)


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ALL_DAYS = frozenset(range(7))
# Openings are looked for this far ahead: a week, and a day for a window across midnight.
_HORIZON = dt.timedelta(days=9)
# Offset changes are found by sampling the offset this often; no zone changes it twice in 6 hours.
_SAMPLE = dt.timedelta(hours=6)


@dataclass(frozen=True)
class Window:
    """A recipient's delivery window: local minutes [start, end) on ``days`` (Monday is 0).

    ``end`` before ``start`` spans midnight, opening on a listed day and closing the next morning;
    ``start`` equal to ``end`` is the whole of each listed day.
    """

    start: int
    end: int
    days: frozenset[int] = _ALL_DAYS

    @classmethod
    def of(cls, window: dict[str, Any]) -> Window:
        """The window a profile's ``delivery_window`` names: {"start": "HH:MM", "end": ..., "days": [...]}."""
        days = window.get("days")
        return cls(
            start=_minutes(window["start"]),
            end=_minutes(window["end"]),
            days=_ALL_DAYS if days is None else frozenset(DAYS.index(day) for day in days),
        )

    def holds(self, instant: dt.datetime, zone: ZoneInfo) -> bool:
        """Whether the local time of ``instant`` lies in the window."""
        local = instant.astimezone(zone)
        minute, day = local.hour * 60 + local.minute, local.weekday()
        if self.start == self.end:
            return day in self.days
        if self.start < self.end:
            return day in self.days and self.start <= minute < self.end
        return (day in self.days and minute >= self.start) or (
            (day - 1) % 7 in self.days and minute < self.end
        )

    def next_opening(self, instant: dt.datetime, zone: ZoneInfo) -> dt.datetime:
        """``instant`` itself when the window holds it, else the first instant after it that it holds.

        The window's state changes only where the local time reaches ``start`` (or midnight for a
        whole-day window) or where the offset changes: a start inside a spring-forward gap opens at
        the first minute after the gap, a fold back into the window opens it at the fold.
        """
        if self.holds(instant, zone):
            return instant
        start = 0 if self.start == self.end else self.start
        at = dt.time(start // 60, start % 60)
        local_day = instant.astimezone(zone).date()
        candidates = [
            wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
            for days_ahead in range(_HORIZON.days + 1)
            for wall in [dt.datetime.combine(local_day + dt.timedelta(days=days_ahead), at)]
            for fold in (0, 1)
        ]
        candidates += offset_changes(instant, instant + _HORIZON, zone)
        opening = min((c for c in candidates if c > instant and self.holds(c, zone)), default=None)
        if opening is None:
            raise AssertionError("unreachable: a window with a day opens within nine days")
        return opening


def _minutes(hh_mm: str) -> int:
    hours, minutes = hh_mm.split(":")
    return int(hours) * 60 + int(minutes)


def offset_changes(since: dt.datetime, until: dt.datetime, zone: ZoneInfo) -> list[dt.datetime]:
    """The instants in (since, until] at which ``zone``'s UTC offset changes, to the second."""

    def offset_at(second: int) -> dt.timedelta | None:
        return dt.datetime.fromtimestamp(second, UTC).astimezone(zone).utcoffset()

    found = []
    step, end = int(_SAMPLE.total_seconds()), math.ceil(until.timestamp())
    before = math.floor(since.timestamp())
    offset = offset_at(before)
    while before < end:
        after = min(before + step, end)
        later = offset_at(after)
        if later != offset:
            low, high = before, after  # the old offset holds at low, the new one at high
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if offset_at(middle) == offset else (low, middle)
            found.append(dt.datetime.fromtimestamp(high, UTC))
        before, offset = after, later
    return found


def plan_delivery(
    requested: dt.datetime | None,
    zone: ZoneInfo,
    *,
    now: dt.datetime,
    start: int,
    end: int,
    window: Window | None = None,
) -> Plan:
    """Plan a notification: a missing or past ``requested`` time means as soon as possible.

    A recipient's ``window`` replaces the appropriate hours [start:00, end:00).
    """
    scheduled = now if requested is None else to_instant(requested, zone)
    earliest = max(scheduled, now)
    if window is not None:
        return Plan(scheduled, window.holds(scheduled, zone), window.next_opening(earliest, zone))
    appropriate = in_appropriate_hours(scheduled, zone, start, end)
    if appropriate and earliest is scheduled:
        return Plan(scheduled, True, scheduled)  # what next_appropriate_time answers, without asking again
    return Plan(scheduled, appropriate, next_appropriate_time(earliest, zone, start, end))
