"""The per-notification event history: created, queued, attempts, delivered, failed, cancelled, forced."""

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
