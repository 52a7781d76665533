"""How a notification is shown: the JSON GET /notifications/{id} returns, also the status webhooks' data."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from marshmallow import Schema, fields

from storage.clock import from_db
from storage.models import CHANNELS, STATUSES, URGENCIES, Notification


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def utc_column(column: str, *, nullable: bool = False) -> fields.Function:
    """A stored UTC column, as ISO 8601 with ``+00:00``."""
    return fields.Function(
        lambda n: _iso(from_db(getattr(n, column))),
        allow_none=nullable,
        metadata={"type": "string", "format": "date-time"},
    )


def _local(column: str) -> fields.Function:
    """A stored UTC column, as ISO 8601 in the recipient's timezone."""

    def present(notification: Notification) -> str | None:
        value = from_db(getattr(notification, column))
        return _iso(value and value.astimezone(ZoneInfo(notification.timezone)))

    return fields.Function(present, metadata={"type": "string", "format": "date-time"})


class NotificationSchema(Schema):
    id = fields.UUID()
    recipient_id = fields.String()
    content = fields.String()
    channel = fields.String(metadata={"enum": list(CHANNELS)})
    status = fields.String(metadata={"enum": list(STATUSES)})
    created_at = utc_column("created_at")
    updated_at = utc_column("updated_at")
    scheduled_time = utc_column("scheduled_time")
    timezone = fields.String()
    local_scheduled_time = _local("scheduled_time")
    appropriate_delivery = fields.Boolean()
    estimated_delivery_time = _local("due_at")
    delivered_at = utc_column("delivered_at", nullable=True)
    attempt_count = fields.Integer()
    last_error = fields.String(allow_none=True)
    forced = fields.Boolean()
    subject = fields.String(allow_none=True)
    title = fields.String(allow_none=True)
    data = fields.Dict(allow_none=True)
    html = fields.String(allow_none=True)
    template = fields.String(allow_none=True, metadata={"description": "the template the texts came from"})
    locale = fields.String(allow_none=True, metadata={"description": "the template's locale used"})
    ttl = fields.Integer(allow_none=True, metadata={"description": "push only"})
    urgency = fields.String(allow_none=True, metadata={"enum": list(URGENCIES), "description": "push only"})
    collapse_key = fields.String(allow_none=True, metadata={"description": "push only"})
    category = fields.String(allow_none=True)
