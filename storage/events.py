"""The per-notification event history: created, queued, attempts, delivered, failed, cancelled, forced."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import peewee

from storage import BaseModel
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
    rows = [{"notification_id": nid, "kind": kind, "host": host, "at": at} for nid in notification_ids]
    if rows:
        NotificationEvent.insert_many(rows).execute()


def history(notification_id: Any) -> peewee.ModelSelect[NotificationEvent]:
    """The events of one notification, oldest first."""
    return (
        NotificationEvent.select()
        .where(NotificationEvent.notification_id == notification_id)
        .order_by(NotificationEvent.at, NotificationEvent.id)
    )
