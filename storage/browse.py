"""Paged lists of a channel's notifications in one status, in the order an operator reads them."""

from __future__ import annotations

from dataclasses import dataclass

from storage.notifications import FAILED, PENDING, Notification

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
