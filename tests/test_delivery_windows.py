"""A recipient's delivery window: across midnight, on listed days, exact across DST, applied to what waits."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.delivery import deliver
from api.delivery_time import Window, offset_changes, plan_delivery
from harness.factories import take
from storage import queries

UTC = dt.UTC
WARSAW = ZoneInfo("Europe/Warsaw")
NEW_YORK = ZoneInfo("America/New_York")
PAST = dt.datetime(2020, 1, 1, tzinfo=UTC)
WEEKDAYS = {"start": "09:00", "end": "21:30", "days": ["mon", "tue", "wed", "thu", "fri"]}


def local(zone, *args):
    return dt.datetime(*args, tzinfo=zone)


def opening(window, zone, *args):
    """The next opening after a local wall time, as a local ISO string."""
    return (
        Window.of(window).next_opening(local(zone, *args).astimezone(UTC), zone).astimezone(zone).isoformat()
    )


def test_a_weekday_window_holds_from_start_inclusive_to_end_exclusive():
    window = Window.of(WEEKDAYS)
    assert window.holds(local(WARSAW, 2026, 6, 5, 9, 0), WARSAW)  # a Friday
    assert window.holds(local(WARSAW, 2026, 6, 5, 21, 29, 59), WARSAW)
    assert not window.holds(local(WARSAW, 2026, 6, 5, 21, 30), WARSAW)
    assert not window.holds(local(WARSAW, 2026, 6, 6, 12, 0), WARSAW)  # Saturday


def test_the_weekend_waits_for_monday_morning():
    assert opening(WEEKDAYS, WARSAW, 2026, 6, 6, 10, 0) == "2026-06-08T09:00:00+02:00"
    assert opening(WEEKDAYS, WARSAW, 2026, 6, 5, 21, 30) == "2026-06-08T09:00:00+02:00"
    assert opening(WEEKDAYS, WARSAW, 2026, 6, 8, 8, 59, 30) == "2026-06-08T09:00:00+02:00"


def test_a_window_across_midnight_opens_on_a_listed_day_and_closes_the_next_morning():
    night = {"start": "22:00", "end": "06:00", "days": ["mon"]}
    window = Window.of(night)
    assert window.holds(local(WARSAW, 2026, 6, 8, 23, 0), WARSAW)  # Monday night
    assert window.holds(local(WARSAW, 2026, 6, 9, 5, 59), WARSAW)  # Tuesday morning
    assert not window.holds(local(WARSAW, 2026, 6, 9, 6, 0), WARSAW)
    # Monday's small hours belong to Sunday's night, which is not listed.
    assert not window.holds(local(WARSAW, 2026, 6, 8, 3, 0), WARSAW)
    assert opening(night, WARSAW, 2026, 6, 8, 3, 0) == "2026-06-08T22:00:00+02:00"
    assert opening(night, WARSAW, 2026, 6, 9, 6, 0) == "2026-06-15T22:00:00+02:00"


def test_start_equal_to_end_is_the_whole_of_each_listed_day():
    saturdays = {"start": "10:00", "end": "10:00", "days": ["sat"]}
    assert Window.of(saturdays).holds(local(WARSAW, 2026, 6, 6, 3, 0), WARSAW)
    assert opening(saturdays, WARSAW, 2026, 6, 5, 12, 0) == "2026-06-06T00:00:00+02:00"
    assert Window.of({"start": "00:00", "end": "00:00"}).holds(local(WARSAW, 2026, 6, 5, 12), WARSAW)


def test_a_window_opening_in_a_spring_forward_gap_opens_at_the_first_minute_after_it():
    # Warsaw: 2026-03-29 02:00 CET became 03:00 CEST; New York: 2026-03-08 02:00 became 03:00.
    assert (
        opening({"start": "02:30", "end": "05:00"}, WARSAW, 2026, 3, 29, 0, 0) == "2026-03-29T03:00:00+02:00"
    )
    assert (
        opening({"start": "02:00", "end": "02:45"}, NEW_YORK, 2026, 3, 8, 1, 0) == "2026-03-09T02:00:00-04:00"
    )
    assert (
        opening({"start": "02:15", "end": "04:00"}, NEW_YORK, 2026, 3, 7, 23, 0)
        == "2026-03-08T03:00:00-04:00"
    )


def test_a_fold_back_into_the_window_opens_it_again():
    # Warsaw: 2026-10-25 03:00 CEST became 02:00 CET, so 02:00-03:00 happens twice.
    window = Window.of({"start": "02:00", "end": "02:30"})
    after_the_first_pass = dt.datetime(2026, 10, 25, 0, 45, tzinfo=UTC)  # 02:45 CEST
    assert window.next_opening(after_the_first_pass, WARSAW) == dt.datetime(2026, 10, 25, 1, 0, tzinfo=UTC)


def test_a_day_the_zone_skipped_is_not_waited_for():
    # Samoa skipped Friday 2011-12-30 entirely.
    apia = ZoneInfo("Pacific/Apia")
    fridays = {"start": "10:00", "end": "12:00", "days": ["fri"]}
    assert opening(fridays, apia, 2011, 12, 29, 20, 0) == "2012-01-06T10:00:00+14:00"


def test_offset_changes_are_found_to_the_second():
    changes = offset_changes(
        dt.datetime(2026, 3, 28, tzinfo=UTC), dt.datetime(2026, 4, 2, tzinfo=UTC), WARSAW
    )
    assert changes == [dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC)]


def test_the_plan_follows_the_window_instead_of_the_appropriate_hours():
    window = Window.of({"start": "23:00", "end": "01:00"})
    plan = plan_delivery(dt.datetime(2030, 1, 10, 23, 30), WARSAW, now=PAST, start=8, end=22, window=window)
    assert plan.appropriate_delivery is True
    assert plan.due_at == plan.scheduled_time
    morning = plan_delivery(dt.datetime(2030, 1, 10, 9, 0), WARSAW, now=PAST, start=8, end=22, window=window)
    assert morning.appropriate_delivery is False
    assert morning.due_at.astimezone(WARSAW).isoformat() == "2030-01-10T23:00:00+01:00"


# Zones with DST and odd offsets are where the edge cases are; all of them are drawn from.
ZONES = sorted(available_timezones() - {"Factory", "localtime"})
# Times near the usual DST changes (01:00-03:00) and midnight, drawn more often than the rest.
MINUTES = st.one_of(st.integers(0, 1439), st.sampled_from([0, 30, 60, 90, 120, 150, 180, 1410]))
WINDOWS = st.builds(Window, start=MINUTES, end=MINUTES, days=st.frozensets(st.integers(0, 6), min_size=1))
INSTANTS = st.datetimes(dt.datetime(1975, 1, 1), dt.datetime(2037, 12, 1), timezones=st.just(UTC))


@st.composite
def zones_and_instants(draw):
    """A zone and an instant, most often within days before one of the zone's offset changes."""
    zone = ZoneInfo(draw(st.sampled_from(ZONES)))
    instant = draw(INSTANTS)
    if draw(st.booleans()):
        changes = offset_changes(instant, instant + dt.timedelta(days=400), zone)
        if changes:
            change = draw(st.sampled_from(changes[:4]))
            instant = change - dt.timedelta(minutes=draw(st.integers(-1440, 3 * 1440)))
    return zone, instant


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window=WINDOWS, zone_and_instant=zones_and_instants())
def test_the_next_opening_is_the_first_minute_the_window_holds_and_never_in_a_gap(window, zone_and_instant):
    zone, instant = zone_and_instant
    opened = window.next_opening(instant, zone)
    assert opened >= instant
    assert window.holds(opened, zone)
    # Not inside a gap: its wall-clock time exists, read back as the same instant.
    wall = opened.astimezone(zone)
    assert wall.replace(tzinfo=None).replace(tzinfo=zone, fold=wall.fold).astimezone(UTC) == opened
    # The first: no minute between the time asked and the opening is in the window.
    if opened > instant:
        assert not window.holds(instant, zone)
        minute = instant.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        while minute < opened:
            assert not window.holds(minute, zone), minute
            minute += dt.timedelta(minutes=1)


# Through the API: the window a profile names, and a change of it moving what waits.


@pytest.fixture
def client(keyed_client):
    return keyed_client


def test_a_notification_is_planned_in_its_recipients_window(client, recipient_id):
    client.put(f"/recipients/{recipient_id}", json={"timezone": "Europe/Warsaw", "delivery_window": WEEKDAYS})
    body = {
        "recipient_id": recipient_id,
        "content": "x",
        "scheduled_time": "2030-06-08T22:00:00",
    }  # a Saturday
    nid = client.post("/notifications/push", json=body).json["notification_id"]
    shown = client.get(f"/notifications/{nid}").json
    assert shown["appropriate_delivery"] is False
    assert shown["estimated_delivery_time"] == "2030-06-10T09:00:00+02:00"


def test_the_window_is_read_in_the_notifications_timezone(client, recipient_id):
    client.put(f"/recipients/{recipient_id}", json={"timezone": "Europe/Warsaw", "delivery_window": WEEKDAYS})
    body = {
        "recipient_id": recipient_id,
        "content": "x",
        "scheduled_time": "2030-06-08T22:00:00",
        "timezone": "America/New_York",
    }
    nid = client.post("/notifications/push", json=body).json["notification_id"]
    assert client.get(f"/notifications/{nid}").json["estimated_delivery_time"] == "2030-06-10T09:00:00-04:00"


def test_a_window_change_moves_notifications_not_yet_handed_to_a_worker(client, recipient_id):
    client.put(f"/recipients/{recipient_id}", json={"timezone": "UTC"})
    now = dt.datetime.now(UTC)
    nid = client.post("/notifications/push", json={"recipient_id": recipient_id, "content": "x"}).json[
        "notification_id"
    ]
    # The scheduler has published its message already; a worker has not taken it yet.
    (queued,) = [p for p in _taken_until(nid) if p.notification_id == nid]

    # A window that opens in two hours' time, every day.
    opens = now + dt.timedelta(hours=2)
    window = {"start": f"{opens:%H:%M}", "end": f"{opens + dt.timedelta(hours=1):%H:%M}"}
    assert client.patch(f"/recipients/{recipient_id}", json={"delivery_window": window}).status_code == 200

    moved = client.get(f"/notifications/{nid}").json
    assert moved["estimated_delivery_time"] == f"{opens:%Y-%m-%dT%H:%M}:00+00:00"
    assert moved["status"] == "Pending"
    # The message already queued now does nothing.
    deliver({queued.notification_id: queued.seq})
    assert queries.get(nid).status == "Pending"
    assert queries.get(nid).attempt_count == 0


def test_a_forced_notification_keeps_its_time(client, recipient_id):
    client.put(f"/recipients/{recipient_id}", json={})
    nid = client.post("/notifications/push", json={"recipient_id": recipient_id, "content": "x"}).json[
        "notification_id"
    ]
    assert client.post(f"/notifications/{nid}/force").status_code == 200
    before = client.get(f"/notifications/{nid}").json["estimated_delivery_time"]
    client.patch(f"/recipients/{recipient_id}", json={"delivery_window": {"start": "03:00", "end": "03:01"}})
    assert client.get(f"/notifications/{nid}").json["estimated_delivery_time"] == before


def _taken_until(notification_id):
    """Scheduler passes until one takes the notification; what that pass took."""
    while taken := take():
        if any(p.notification_id == notification_id for p in taken):
            return taken
    raise AssertionError(f"{notification_id} was not due")
