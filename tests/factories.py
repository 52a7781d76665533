"""Notifications made straight in storage, for tests that start from a given row."""

from __future__ import annotations

import datetime as dt

from storage import ingest, models, queries
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
