"""The per-notification event history: created, queued, attempts, delivered, failed, cancelled, forced,
and each device's outcome."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from storage.clock import utcnow
from storage.database import db, is_postgres
from storage.models import NotificationEvent


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


def record_each(
    entries: Iterable[tuple[Any, str, str | None]], host: str, at: dt.datetime | None = None
) -> None:
    """Events of their own kinds and details: ``(notification id, kind, detail)`` each."""
    rows = list(entries)
    if not rows:
        return
    at = at or utcnow()
    if is_postgres():
        db.execute_sql(
            "INSERT INTO notification_event (notification_id, kind, at, host, detail)"
            " SELECT e.notification_id, e.kind, %s, %s, e.detail"
            " FROM unnest(%s::uuid[], %s::text[], %s::text[]) AS e(notification_id, kind, detail)",
            (at, host, [str(nid) for nid, _, _ in rows], [k for _, k, _ in rows], [d for _, _, d in rows]),
        )
        return
    NotificationEvent.insert_many(
        [
            {"notification_id": nid, "kind": kind, "host": host, "at": at, "detail": detail}
            for nid, kind, detail in rows
        ]
    ).execute()
