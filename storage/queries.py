"""Reading notifications: one by id, filtered lists, an operator's pages, and one's history."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import peewee

from storage.models import FAILED, PENDING, Notification, NotificationEvent


class NotificationNotFound(LookupError):
    """No notification has that id."""


def get(notification_id: Any) -> Notification:
    try:
        return Notification.get_by_id(notification_id)
    except peewee.DoesNotExist:
        raise NotificationNotFound(str(notification_id)) from None


def created_at(notification_id: Any) -> dt.datetime | None:
    """When the notification with this id was stored; None when there is none."""
    stored: dt.datetime | None = (
        Notification.select(Notification.created_at).where(Notification.id == notification_id).scalar()
    )
    return stored


def listing(
    *, status: str | None = None, channel: str | None = None, recipient_id: str | None = None
) -> peewee.ModelSelect[Notification]:
    """Notifications matching the filters, newest first."""
    query = Notification.select().order_by(Notification.created_at.desc(), Notification.id.desc())
    if status:
        query = query.where(Notification.status == status)
    if channel:
        query = query.where(Notification.channel == channel)
    if recipient_id:
        query = query.where(Notification.recipient_id == recipient_id)
    return query


# Scheduled ones by when they fall due; the others most recently changed first.
_ORDER = {
    PENDING: (Notification.due_at, Notification.id),
    FAILED: (Notification.updated_at.desc(), Notification.id),
}


@dataclass(frozen=True)
class Page:
    items: list[Notification]
    total: int
    number: int
    size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))


def page(channel: str, status: str, number: int = 1, size: int = 25) -> Page:
    """Page ``number`` (from 1) of the ``channel``'s notifications in ``status``."""
    query = Notification.select().where((Notification.channel == channel) & (Notification.status == status))
    ordered = query.order_by(*_ORDER.get(status, (Notification.updated_at.desc(), Notification.id)))
    items = list(ordered.limit(size).offset((max(1, number) - 1) * size))
    return Page(items=items, total=query.count(), number=max(1, number), size=size)


def history(notification_id: Any) -> list[NotificationEvent]:
    """The events of one notification, oldest first.

    "created" is not stored as an event: the notification's row already says when and by which host
    it was accepted, so that event is read from there (and a "created" row stored by an earlier
    version, which says the same, is left out).
    """
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


def awaiting_delivery(recipient_id: str) -> list[Notification]:
    """The recipient's Pending notifications not forced: what a change of their window moves."""
    return list(
        Notification.select(
            Notification.id,
            Notification.scheduled_time,
            Notification.timezone,
            Notification.due_at,
            Notification.message_seq,
        ).where(
            (Notification.recipient_id == recipient_id)
            & (Notification.status == PENDING)
            & (Notification.forced == False)  # noqa: E712  (peewee builds SQL from ==)
        )
    )
