"""Aggregate queries for metrics and the dashboard: counts computed by the database, never by loading rows."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import peewee

from storage.clock import utcnow
from storage.database import db
from storage.models import CANCELLED, DELIVERED, FAILED, PENDING, PROCESSING, Notification

_COUNT = peewee.fn.COUNT(peewee.SQL("*"))

# The names the metrics use for the stored statuses: what a client sees as "scheduled" is Pending.
STATUS_NAMES = {
    PENDING: "scheduled",
    PROCESSING: "processing",
    DELIVERED: "delivered",
    FAILED: "failed",
    CANCELLED: "cancelled",
}


def activity(since: dt.datetime) -> dict[str, Any]:
    """Notifications updated since ``since``, counted by handling host, channel and status.

    The host is the worker that last claimed a notification, or the API host that accepted it when
    no worker has touched it yet. One GROUP BY over the ``updated_at`` index.
    """
    host = peewee.fn.COALESCE(Notification.worker_host, Notification.api_host)
    rows = (
        Notification.select(host.alias("host"), Notification.channel, Notification.status, _COUNT)
        .where(Notification.updated_at >= since)
        .group_by(host, Notification.channel, Notification.status)
        .tuples()
        .execute()  # rows as plain tuples
    )
    servers: dict[str, Any] = {}
    total = 0
    for server, channel, status, count in rows:
        entry = servers.setdefault(server, {"channels": {}, "total": 0})
        per_channel = entry["channels"].setdefault(
            channel, {"total": 0, "statuses": dict.fromkeys(STATUS_NAMES.values(), 0)}
        )
        per_channel["statuses"][STATUS_NAMES.get(status, status.lower())] += count
        per_channel["total"] += count
        entry["total"] += count
        total += count
    return {"servers": servers, "total": total}


def counts_by_status(statuses: Iterable[str]) -> dict[tuple[str, str], int]:
    """How many notifications there are of each (channel, status) among ``statuses``, from the index."""
    query = (
        Notification.select(Notification.channel, Notification.status, _COUNT)
        .where(Notification.status.in_(list(statuses)))
        .group_by(Notification.channel, Notification.status)
        .tuples()
        .execute()  # rows as plain tuples
    )
    return {(channel, status): count for channel, status, count in query}


def schedule_outlook(now: dt.datetime | None = None) -> dict[str, dict[str, int]]:
    """Pending notifications per channel: due now (overdue), in the next hour, the next day, or later."""
    now = now or utcnow()
    hour, day = now + dt.timedelta(hours=1), now + dt.timedelta(days=1)
    bucket = peewee.Case(
        None,
        [
            (Notification.due_at <= now, "now"),
            (Notification.due_at <= hour, "hour"),
            (Notification.due_at <= day, "day"),
        ],
        "later",
    )
    query = (
        Notification.select(Notification.channel, bucket.alias("bucket"), _COUNT)
        .where(Notification.status == PENDING)
        .group_by(Notification.channel, bucket)
        .tuples()
        .execute()  # rows as plain tuples
    )
    outlook: dict[str, dict[str, int]] = defaultdict(
        lambda: dict.fromkeys(("now", "hour", "day", "later"), 0)
    )
    for channel, when, count in query:
        outlook[channel][when] = count
    return dict(outlook)


def timeline(since: dt.datetime, *, unit: str = "hour") -> list[tuple[dt.datetime, str, str, int]]:
    """(period start, channel, status, count) of notifications last updated, per ``unit``, since ``since``."""
    period = db.truncate_date(unit, Notification.updated_at)
    query = (
        Notification.select(period.alias("period"), Notification.channel, Notification.status, _COUNT)
        .where(Notification.updated_at >= since)
        .group_by(period, Notification.channel, Notification.status)
        .order_by(period)
        .tuples()
        .execute()  # rows as plain tuples
    )
    return [(_as_datetime(start), channel, status, count) for start, channel, status, count in query]


def _as_datetime(value: Any) -> dt.datetime:
    # SQLite's truncation yields text, PostgreSQL's a timestamp.
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
