"""The scheduling rules: local wall-clock times, appropriate hours, DST gaps and folds."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, available_timezones

from hypothesis import given, settings
from hypothesis import strategies as st

from api.delivery_time import in_appropriate_hours, next_appropriate_time, plan_delivery, to_instant

UTC = dt.UTC
NY = ZoneInfo("America/New_York")
PAST = dt.datetime(2020, 1, 1, tzinfo=UTC)


def test_issue_example_new_york_afternoon():
    plan = plan_delivery(dt.datetime(2023, 12, 1, 15, 30), NY, now=PAST, start=8, end=22)
    assert plan.scheduled_time == dt.datetime(2023, 12, 1, 20, 30, tzinfo=UTC)
    assert plan.scheduled_time.astimezone(NY).isoformat() == "2023-12-01T15:30:00-05:00"
    assert plan.appropriate_delivery is True
    assert plan.due_at == plan.scheduled_time


def test_time_with_offset_is_that_instant_whatever_the_timezone():
    requested = dt.datetime(2023, 12, 1, 15, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert to_instant(requested, NY) == dt.datetime(2023, 12, 1, 13, 30, tzinfo=UTC)


def test_late_evening_moves_to_next_morning():
    plan = plan_delivery(dt.datetime(2023, 12, 1, 23, 15), NY, now=PAST, start=8, end=22)
    assert plan.appropriate_delivery is False
    assert plan.due_at.astimezone(NY).isoformat() == "2023-12-02T08:00:00-05:00"


def test_early_morning_moves_to_same_morning():
    plan = plan_delivery(dt.datetime(2023, 12, 1, 6, 0), NY, now=PAST, start=8, end=22)
    assert plan.due_at.astimezone(NY).isoformat() == "2023-12-01T08:00:00-05:00"


def test_end_hour_is_exclusive_and_start_hour_inclusive():
    assert in_appropriate_hours(dt.datetime(2023, 12, 1, 8, 0, tzinfo=NY), NY, 8, 22)
    assert in_appropriate_hours(dt.datetime(2023, 12, 1, 21, 59, 59, tzinfo=NY), NY, 8, 22)
    assert not in_appropriate_hours(dt.datetime(2023, 12, 1, 22, 0, tzinfo=NY), NY, 8, 22)
    assert not in_appropriate_hours(dt.datetime(2023, 12, 1, 7, 59, 59, tzinfo=NY), NY, 8, 22)


def test_past_time_means_as_soon_as_possible():
    now = dt.datetime(2024, 6, 3, 15, 0, tzinfo=UTC)  # 11:00 in New York
    plan = plan_delivery(dt.datetime(2024, 6, 1, 9, 0), NY, now=now, start=8, end=22)
    assert plan.scheduled_time < now
    assert plan.due_at == now


def test_past_time_at_night_waits_for_morning():
    now = dt.datetime(2024, 6, 3, 4, 0, tzinfo=UTC)  # 00:00 in New York
    plan = plan_delivery(dt.datetime(2024, 6, 1, 9, 0), NY, now=now, start=8, end=22)
    assert plan.due_at.astimezone(NY).isoformat() == "2024-06-03T08:00:00-04:00"


def test_missing_time_means_now():
    now = dt.datetime(2024, 6, 3, 15, 0, tzinfo=UTC)
    plan = plan_delivery(None, ZoneInfo("UTC"), now=now, start=8, end=22)
    assert plan.scheduled_time == plan.due_at == now


def test_wall_time_in_dst_gap_moves_forward_by_the_gap():
    # 2024-03-10 02:30 does not exist in New York: clocks jump from 02:00 to 03:00.
    instant = to_instant(dt.datetime(2024, 3, 10, 2, 30), NY)
    assert instant.astimezone(NY).isoformat() == "2024-03-10T03:30:00-04:00"


def test_wall_time_in_dst_fold_is_the_first_occurrence():
    # 2024-11-03 01:30 happens twice in New York; the first is EDT (-04:00).
    instant = to_instant(dt.datetime(2024, 11, 3, 1, 30), NY)
    assert instant == dt.datetime(2024, 11, 3, 5, 30, tzinfo=UTC)


def test_start_of_hours_inside_a_dst_gap_is_the_first_instant_after_it():
    # Chile springs forward at 00:00 -> 01:00 (2024-09-08), so hours starting at 00 begin at 01:00.
    santiago = ZoneInfo("America/Santiago")
    before = dt.datetime(2024, 9, 7, 23, 30, tzinfo=santiago)
    due = next_appropriate_time(before, santiago, 0, 23)
    assert due.astimezone(santiago).isoformat() == "2024-09-08T01:00:00-03:00"


def test_next_morning_across_fall_back_night():
    # The night New York falls back is 25 hours long; the next 08:00 is still local 08:00.
    late = dt.datetime(2024, 11, 2, 23, 0, tzinfo=NY)
    assert next_appropriate_time(late, NY, 8, 22).astimezone(NY).isoformat() == "2024-11-03T08:00:00-05:00"


def test_zone_that_skipped_a_whole_day():
    apia = ZoneInfo("Pacific/Apia")  # 2011-12-30 never happened there
    late = dt.datetime(2011, 12, 29, 23, 0, tzinfo=apia)
    due = next_appropriate_time(late, apia, 8, 22)
    assert due.astimezone(apia).isoformat() == "2011-12-31T08:00:00+14:00"


def test_a_day_whose_hours_fall_in_a_clock_change_s_gap_has_none():
    santiago = ZoneInfo("Chile/Continental")  # 2000-10-15 00:00 became 01:00
    evening = dt.datetime(2000, 10, 14, 1, 30, tzinfo=santiago)
    due = next_appropriate_time(evening, santiago, 0, 1)
    assert due.astimezone(santiago).isoformat() == "2000-10-16T00:00:00-03:00"


ZONES = sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/")))
instants = st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2037, 12, 31)).map(
    lambda d: d.replace(tzinfo=UTC)
)
hours = st.tuples(st.integers(0, 23), st.integers(1, 24)).filter(lambda h: h[0] < h[1])


@settings(max_examples=400, deadline=None)
@given(instant=instants, zone_name=st.sampled_from(ZONES), window=hours)
def test_due_time_is_the_first_appropriate_instant(instant, zone_name, window):
    zone, (start, end) = ZoneInfo(zone_name), window
    due = next_appropriate_time(instant, zone, start, end)
    assert due >= instant
    assert in_appropriate_hours(due, zone, start, end)
    if due != instant:
        # Nothing earlier qualifies: the second before the due time is still outside the hours,
        # and the wait is never longer than a day and a night (plus a skipped calendar day).
        assert not in_appropriate_hours(due - dt.timedelta(seconds=1), zone, start, end)
        assert due - instant <= dt.timedelta(hours=24 + 24 + 2)
        local = due.astimezone(zone)
        assert local.hour >= start


@settings(max_examples=300, deadline=None)
@given(
    wall=st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2037, 12, 31)),
    zone_name=st.sampled_from(ZONES),
)
def test_local_wall_time_round_trips_unless_it_does_not_exist(wall, zone_name):
    zone = ZoneInfo(zone_name)
    instant = to_instant(wall, zone)
    back = instant.astimezone(zone).replace(tzinfo=None)
    if back != wall:
        # Only a wall time in a gap moves, and then forward, by at most the gap.
        assert wall < back <= wall + dt.timedelta(hours=24)


@settings(max_examples=300, deadline=None)
@given(
    requested=st.none() | instants,
    now=instants,
    zone_name=st.sampled_from(ZONES),
    window=hours,
)
def test_a_plan_is_its_definition(requested, now, zone_name, window):
    """The plan answers without asking twice when the time asked for is due as it is; the same plan."""
    zone, (start, end) = ZoneInfo(zone_name), window
    plan = plan_delivery(requested, zone, now=now, start=start, end=end)
    scheduled = now if requested is None else requested
    assert plan.scheduled_time == scheduled
    assert plan.appropriate_delivery == in_appropriate_hours(scheduled, zone, start, end)
    assert plan.due_at == next_appropriate_time(max(scheduled, now), zone, start, end)
