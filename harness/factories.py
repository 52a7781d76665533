"""Notifications made, changed and taken straight in storage, and the envelopes providers deliver."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import storage
from actors.providers import Envelope
from storage import ingest, models, queries, schedule, workers
from storage.clock import utcnow


def make(channel: str = "push", *, due_in: float = 0.0, **extra) -> models.Notification:
    """A Pending notification due ``due_in`` seconds from now, with ``extra`` fields overriding."""
    now = utcnow()
    fields = {
        "channel": channel,
        "recipient_id": "r1",
        "content": "hello",
        "timezone": "UTC",
        "scheduled_time": now,
        "appropriate_delivery": True,
        "due_at": now + dt.timedelta(seconds=due_in),
        **extra,
    }
    return queries.get(ingest.create(host="api-1", **fields))


def settle(notification: models.Notification, **changes) -> None:
    """Set ``changes`` on the notification's row, as if it had got there by its transitions."""
    models.Notification.update(**changes).where(models.Notification.id == notification.id).execute()


def take(
    horizon: float = 60.0, lease: float = 600.0, limit: int = 100, channels: Iterable[str] | None = None
) -> list[schedule.Publication]:
    """What one scheduler pass takes, in a transaction of its own."""
    with storage.db.atomic():
        return schedule.take_due(horizon=horizon, lease=lease, limit=limit, channels=channels)


def dashboard_rows() -> dict[str, str]:
    """A scheduled, a failed and a delivered notification and a worker's heartbeat; the ids by role."""
    scheduled = make(recipient_id="soon-user")
    settle(scheduled, due_at=utcnow() + dt.timedelta(minutes=30))
    failed = make("email", recipient_id="broken@example.com")
    settle(failed, status=models.FAILED, attempt_count=6, last_error="SMTP 550 no such user")
    settle(make(), status=models.DELIVERED, worker_host="worker-1")
    workers.beat(host="worker-1", pid=7, queues="push", in_flight=2, started_at=utcnow())
    return {"scheduled": str(scheduled.id), "failed": str(failed.id)}


def email_envelope(notification_id: str = "n-1", **changes: object) -> Envelope:
    fields: dict = {
        "notification_id": notification_id,
        "channel": "email",
        "recipient_id": "alice@example.com",
        "content": "Your order has shipped.",
        "subject": "Order update",
    }
    return Envelope(**(fields | changes))


def push_envelope(notification_id: str = "p-1", **changes: object) -> Envelope:
    fields: dict = {
        "notification_id": notification_id,
        "channel": "push",
        "recipient_id": "user-42",
        "content": "Your order has shipped.",
        "title": "Order update",
        "data": {"order": 7, "tags": ["a", "ü"]},
    }
    return Envelope(**(fields | changes))
