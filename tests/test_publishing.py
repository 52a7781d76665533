"""How the scheduler groups due rows into delivery messages."""

from __future__ import annotations

import datetime as dt

from actors.scheduler.publishing import BATCH_WINDOW, batches
from storage.schedule import Publication

T0 = dt.datetime(2026, 11, 24, 12, 0, 0)


def dispatch(n: int, channel: str = "push", after: float = 0.0) -> Publication:
    return Publication(f"id-{n}", channel, T0 + dt.timedelta(seconds=after), 1)


def ids(groups: list[list[Publication]]) -> list[list[str]]:
    return [[d.notification_id for d in group] for group in groups]


def test_a_message_holds_one_channel_and_at_most_the_batch_size():
    rows = [dispatch(n, "push" if n % 2 else "email") for n in range(7)]
    groups = list(batches(rows, size=2))
    assert all(len({d.channel for d in group}) == 1 for group in groups)
    assert sorted(len(group) for group in groups) == [1, 2, 2, 2]  # 3 push, 4 email
    assert sorted(d.notification_id for group in groups for d in group) == sorted(
        d.notification_id for d in rows
    )


def test_rows_due_further_apart_than_the_window_go_in_different_messages():
    window = BATCH_WINDOW.total_seconds()
    rows = [
        dispatch(0, after=0),
        dispatch(1, after=window),
        dispatch(2, after=window * 1.5),
        dispatch(3, after=5),
    ]
    assert ids(list(batches(list(reversed(rows)), size=50))) == [["id-0", "id-1"], ["id-2"], ["id-3"]]


def test_nothing_taken_makes_no_message():
    assert list(batches([], size=50)) == []
