"""The status webhooks' outbox: events written with the changes they report, taken, sent and retried.

An event is a row written in the transaction of the status change it reports, so that a change
committed always has its event. The schedulers publish the events due, one message per event;
only the earliest unfinished event of a notification is ever due, so that a notification's events
reach the receiver in the order of its changes. Like a notification's ``message_seq``, an event's
``seq`` makes a stale or duplicate message do nothing.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any, NamedTuple

import peewee

import settings
from storage.clock import utcnow
from storage.database import db
from storage.models import (
    EVENT_FAILED,
    EVENT_PENDING,
    EVENT_SENT,
    Device,
    JSONField,
    Notification,
    StatusEvent,
)
from storage.representation import DeviceSchema

TYPES = {
    "Delivered": "notification.delivered",
    "Failed": "notification.failed",
    "Cancelled": "notification.cancelled",
}

# The PostgreSQL form of ``record``, for a data-modifying CTE named ``changed`` returning ``n.*``
# rows; its one parameter says whether events are wanted at all.
PG_RECORD_CTE = """
announced AS (
    INSERT INTO status_event (notification_id, type, occurred_at, notification, status, attempts,
                              next_attempt_at, since, seq)
    SELECT c.id, 'notification.' || lower(c.status), c.updated_at, to_jsonb(c)::text, 'pending', 0,
           c.updated_at, c.updated_at, 0
    FROM changed c WHERE %s
)"""


def enabled() -> bool:
    return bool(settings.STATUS_WEBHOOK_URL)


def snapshot(notification: Notification) -> dict[str, Any]:
    """A notification's stored columns as JSON values: what PostgreSQL's ``to_jsonb`` of the row gives."""
    row: dict[str, Any] = {}
    for field in Notification._meta.sorted_fields:
        value = getattr(notification, field.name)
        if isinstance(field, JSONField):
            value = field.db_value(value)
        elif isinstance(value, dt.datetime):
            value = value.isoformat()
        elif isinstance(value, uuid.UUID):
            value = str(value)
        row[field.column_name] = value
    return row


def restore(row: dict[str, Any]) -> Notification:
    """The notification a ``snapshot`` was taken of."""
    values: dict[str, Any] = {}
    for field in Notification._meta.sorted_fields:
        value = row.get(field.column_name)
        if isinstance(field, JSONField):
            value = field.python_value(value)
        elif isinstance(field, peewee.DateTimeField) and isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        values[field.name] = value
    return Notification(**values)


def record(notifications: Iterable[Notification]) -> None:
    """Write the event of each notification's new status; call it in the change's transaction."""
    if not enabled():
        return
    rows = [
        {
            "notification_id": n.id,
            "type": TYPES[n.status],
            "occurred_at": n.updated_at,
            "notification": snapshot(n),
            "next_attempt_at": n.updated_at,
            "since": n.updated_at,
        }
        for n in notifications
    ]
    if rows:
        StatusEvent.insert_many(rows).execute()


DEVICE_DISABLED = "device.disabled"


def record_device_disabled(device: Device) -> None:
    """Write the event of a device disabled; call it in the transaction that disabled it.

    Its events are ordered by the device's id, as a notification's are by the notification's.
    """
    if not enabled():
        return
    now = device.disabled_at or utcnow()
    StatusEvent.insert(
        notification_id=device.id,
        type=DEVICE_DISABLED,
        occurred_at=now,
        notification=DeviceSchema().dump(device),
        next_attempt_at=now,
        since=now,
    ).execute()


class Due(NamedTuple):
    """An event taken for publishing: its message carries ``seq``, to be sent at ``at``."""

    id: int
    seq: int
    at: dt.datetime


def _earlier_unfinished() -> peewee.Expression:
    earlier = StatusEvent.alias("earlier")
    return ~peewee.fn.EXISTS(
        earlier.select(peewee.SQL("1")).where(
            (earlier.notification_id == StatusEvent.notification_id)
            & (earlier.id < StatusEvent.id)
            & (earlier.status == EVENT_PENDING)
        )
    )


def take_due(*, horizon: float, lease: float, limit: int = 500) -> list[Due]:
    """Events due within ``horizon`` seconds that no message owns, each now owned by a new one."""
    now = utcnow()
    candidates = list(
        StatusEvent.select(StatusEvent.id, StatusEvent.seq, StatusEvent.next_attempt_at)
        .where(
            (StatusEvent.status == EVENT_PENDING)
            & (StatusEvent.next_attempt_at <= now + dt.timedelta(seconds=horizon))
            & (StatusEvent.lease_until.is_null() | (StatusEvent.lease_until < now))
            & _earlier_unfinished()
        )
        .order_by(StatusEvent.id)
        .limit(limit)
    )
    taken = []
    for event in candidates:
        at = max(event.next_attempt_at, now)
        won = (
            StatusEvent.update(seq=StatusEvent.seq + 1, lease_until=at + dt.timedelta(seconds=lease))
            .where((StatusEvent.id == event.id) & (StatusEvent.seq == event.seq))
            .execute()
        )
        if won:
            taken.append(Due(event.id, event.seq + 1, at))
    return taken


def release(event_id: int, seq: int) -> None:
    """Give back an event whose message could not be published, for the next pass."""
    StatusEvent.update(lease_until=None).where(
        (StatusEvent.id == event_id) & (StatusEvent.seq == seq)
    ).execute()


def claim(event_id: int, seq: int, *, lease: float) -> StatusEvent | None:
    """Take an event for sending with the message numbered ``seq``; None when that message is stale,
    a duplicate, or an earlier event of the notification is not finished yet."""
    now = utcnow()
    rows = list(
        StatusEvent.update(seq=StatusEvent.seq + 1, lease_until=now + dt.timedelta(seconds=lease))
        .where(
            (StatusEvent.id == event_id)
            & (StatusEvent.seq == seq)
            & (StatusEvent.status == EVENT_PENDING)
            & _earlier_unfinished()
        )
        .returning(StatusEvent)
        .execute()
    )
    return rows[0] if rows else None


def _finish(event: StatusEvent, **changes: Any) -> bool:
    return bool(
        StatusEvent.update(lease_until=None, **changes)
        .where((StatusEvent.id == event.id) & (StatusEvent.seq == event.seq))
        .execute()
    )


def mark_sent(event: StatusEvent) -> bool:
    return _finish(
        event, status=EVENT_SENT, attempts=event.attempts + 1, finished_at=utcnow(), last_error=None
    )


def retry_later(event: StatusEvent, *, error: str, delay: float) -> bool:
    """Record a failed attempt: the event is due again after ``delay``, or failed past the max age."""
    now = utcnow()
    again = now + dt.timedelta(seconds=delay)
    if again - event.since > dt.timedelta(seconds=settings.STATUS_WEBHOOK_MAX_AGE):
        return _finish(
            event, status=EVENT_FAILED, attempts=event.attempts + 1, finished_at=now, last_error=error
        )
    return _finish(event, attempts=event.attempts + 1, next_attempt_at=again, last_error=error)


def failed(limit: int = 50) -> list[StatusEvent]:
    """Events given up on, newest first: what the dashboard shows for sending again."""
    return list(
        StatusEvent.select()
        .where(StatusEvent.status == EVENT_FAILED)
        .order_by(StatusEvent.id.desc())
        .limit(limit)
    )


def send_again(event_id: int) -> bool:
    """Make a failed event pending again, with a new max age from now."""
    now = utcnow()
    with db.atomic():
        return bool(
            StatusEvent.update(
                status=EVENT_PENDING,
                next_attempt_at=now,
                since=now,
                lease_until=None,
                finished_at=None,
                attempts=0,
            )
            .where((StatusEvent.id == event_id) & (StatusEvent.status == EVENT_FAILED))
            .execute()
        )
