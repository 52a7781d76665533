"""How a notification and a device are shown: the JSON the API returns, also the status webhooks' data."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from marshmallow import Schema, fields, post_dump

from storage.clock import from_db
from storage.models import CHANNELS, DEVICE_KINDS, STATUSES, URGENCIES, Device, Notification


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


class DeviceSchema(Schema):
    """A device as clients see it: never its subscription keys."""

    id = fields.UUID()
    recipient_id = fields.String()
    kind = fields.String(metadata={"enum": list(DEVICE_KINDS)})
    label = fields.String(allow_none=True)
    active = fields.Boolean()
    created_at = utc_column("created_at")
    last_seen_at = utc_column("last_seen_at")
    last_success_at = utc_column("last_success_at", nullable=True)
    disabled_at = utc_column("disabled_at", nullable=True)
    disabled_reason = fields.String(allow_none=True)
    endpoint = fields.Function(
        lambda d: d.address, metadata={"type": "string", "description": "webpush and unifiedpush only"}
    )
    environment = fields.String(metadata={"enum": ["production", "sandbox"], "description": "apns only"})

    @post_dump(pass_original=True)
    def _of_its_kind(self, data: dict[str, Any], device: Device, **_kwargs: Any) -> dict[str, Any]:
        if device.kind not in ("webpush", "unifiedpush"):
            data.pop("endpoint", None)
        if device.kind != "apns":
            data.pop("environment", None)
        return data
