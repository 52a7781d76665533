"""The per-notification event history: created, queued, attempts, delivered, failed, cancelled, forced."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import peewee

from storage import BaseModel, db, is_postgres
from storage.clock import utcnow


class NotificationEvent(BaseModel):
    id = peewee.BigAutoField()
    notification_id = peewee.UUIDField(index=True)
    kind = peewee.CharField(max_length=16)
    at = peewee.DateTimeField()
    host = peewee.CharField(max_length=255)
    detail = peewee.TextField(null=True)


def record(
    notification_id: Any, kind: str, host: str, detail: str | None = None, at: dt.datetime | None = None
) -> None:
    NotificationEvent.insert(
        notification_id=notification_id, kind=kind, host=host, detail=detail, at=at or utcnow()
    ).execute()


def record_many(notification_ids: Iterable[Any], kind: str, host: str, at: dt.datetime | None = None) -> None:
    at = at or utcnow()
    ids = [str(nid) for nid in notification_ids]
    if not ids:
        return
    if is_postgres():
        # One array parameter, not a row of parameters per event for peewee to build.
        db.execute_sql(
            "INSERT INTO notification_event (notification_id, kind, at, host)"
            " SELECT unnest(%s::uuid[]), %s, %s, %s",
            (ids, kind, at, host),
        )
        return
    rows = [{"notification_id": nid, "kind": kind, "host": host, "at": at} for nid in ids]
    NotificationEvent.insert_many(rows).execute()


def history(notification_id: Any) -> list[NotificationEvent]:
    """The events of one notification, oldest first.

    "created" is not stored as an event: the notification's row already says when and by which host
    it was accepted, so that event is read from there (and a "created" row stored by an earlier
    version, which says the same, is left out).
    """
    from storage.notifications import Notification  # which imports this module

    accepted = Notification.select(Notification.created_at, Notification.api_host).where(
        Notification.id == notification_id
    )
    created = [
        NotificationEvent(notification_id=notification_id, kind="created", at=n.created_at, host=n.api_host)
        for n in accepted
    ]
    later = (
        NotificationEvent.select()
        .where((NotificationEvent.notification_id == notification_id) & (NotificationEvent.kind != "created"))
        .order_by(NotificationEvent.at, NotificationEvent.id)
    )
    return created + list(later)
