"""The tables: notifications, their events, recipients, the schedulers' passes, worker processes,
request guards, templates, recipients' devices and each notification's deliveries to them."""

from __future__ import annotations

import json
import uuid
from typing import Any

import peewee

from storage.database import BaseModel

PENDING, PROCESSING, DELIVERED, FAILED, CANCELLED = (
    "Pending",
    "Processing",
    "Delivered",
    "Failed",
    "Cancelled",
)
STATUSES = (PENDING, PROCESSING, DELIVERED, FAILED, CANCELLED)
CHANNELS = ("push", "email")
DEVICE_KINDS = ("webpush", "unifiedpush", "fcm", "apns")
URGENCIES = ("very-low", "low", "normal", "high")


class JSONField(peewee.TextField):
    """A JSON document kept as text, so that SQLite and PostgreSQL store it alike."""

    def db_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def python_value(self, value: Any) -> Any:
        return None if value is None else json.loads(value)


class Notification(BaseModel):
    id = peewee.UUIDField(primary_key=True, default=uuid.uuid4)
    channel = peewee.CharField(max_length=8)
    recipient_id = peewee.CharField(max_length=320)
    content = peewee.TextField()
    subject = peewee.CharField(max_length=998, null=True)
    title = peewee.CharField(max_length=255, null=True)
    data = JSONField(null=True)
    # An email's HTML part, sent beside ``content`` (its text part) as multipart/alternative.
    html = peewee.TextField(null=True)
    # The template the texts were rendered from when accepted, and the locale of it used.
    template = peewee.CharField(max_length=100, null=True)
    locale = peewee.CharField(max_length=35, null=True)
    # What kind of notification it is, for the recipient's preferences ("marketing", "security").
    category = peewee.CharField(max_length=64, null=True)
    timezone = peewee.CharField(max_length=64)
    # The instant the client asked for, and the instant it is due (moved into appropriate hours).
    scheduled_time = peewee.DateTimeField()
    appropriate_delivery = peewee.BooleanField()
    due_at = peewee.DateTimeField()
    status = peewee.CharField(max_length=12, default=PENDING)
    attempt_count = peewee.IntegerField(default=0)
    # Attempts made before the last force; the retry budget starts again from there.
    attempts_at_force = peewee.IntegerField(default=0)
    forced = peewee.BooleanField(default=False)
    last_error = peewee.TextField(null=True)
    # The number of the row's current broker message, bumped each time one is published for it;
    # only a message carrying the current number may claim the row, which turns every older or
    # duplicate message into a no-op.
    message_seq = peewee.IntegerField(default=0)
    # Until when the queued message (Pending) or the claiming worker (Processing) owns the row.
    lease_until = peewee.DateTimeField(null=True)
    api_host = peewee.CharField(max_length=255)
    worker_host = peewee.CharField(max_length=255, null=True)
    created_at = peewee.DateTimeField()
    updated_at = peewee.DateTimeField()
    delivered_at = peewee.DateTimeField(null=True)
    # Push only: how long a push service keeps it, how urgent it is, which older one it replaces.
    ttl = peewee.IntegerField(null=True)
    urgency = peewee.CharField(max_length=8, null=True)
    collapse_key = peewee.CharField(max_length=32, null=True)

    class Meta:
        indexes = (
            (("created_at",), False),
            (("recipient_id", "created_at"), False),
            (("updated_at",), False),
        )


class Recipient(BaseModel):
    """A recipient's profile; its id is the ``recipient_id`` notifications carry."""

    id = peewee.CharField(max_length=320, primary_key=True)
    email = peewee.CharField(max_length=254, null=True)
    timezone = peewee.CharField(max_length=64, null=True)
    locale = peewee.CharField(max_length=64, null=True)
    # {"start": "HH:MM", "end": "HH:MM", "days": ["mon", ...]}: replaces the appropriate hours.
    delivery_window = JSONField(null=True)
    # {"channels": {channel: bool}, "categories": {category: {channel: bool}}}
    preferences = JSONField(null=True)
    created_at = peewee.DateTimeField(index=True)
    updated_at = peewee.DateTimeField()


class NotificationEvent(BaseModel):
    id = peewee.BigAutoField()
    notification_id = peewee.UUIDField(index=True)
    kind = peewee.CharField(max_length=16)
    at = peewee.DateTimeField()
    host = peewee.CharField(max_length=255)
    detail = peewee.TextField(null=True)


class SchedulerPass(BaseModel):
    """A pass in flight: the rows it took, as ``{notification id: message_seq}``, and until when."""

    id = peewee.BigAutoField()
    seqs = JSONField()
    lease_until = peewee.DateTimeField()


class WorkerProcess(BaseModel):
    # host:pid, unique while the process lives; a restarted process gets a new row.
    id = peewee.CharField(max_length=300, primary_key=True)
    host = peewee.CharField(max_length=255)
    queues = peewee.CharField(max_length=255)
    in_flight = peewee.IntegerField(default=0)
    started_at = peewee.DateTimeField()
    last_seen = peewee.DateTimeField(index=True)


class IdempotentRequest(BaseModel):
    id = peewee.BigAutoField()
    client = peewee.CharField(max_length=80)
    key = peewee.CharField(max_length=255)
    # sha256 of method, path and canonical JSON body: the same key must come with the same request.
    request_hash = peewee.CharField(max_length=64)
    created_at = peewee.DateTimeField()
    status_code = peewee.IntegerField(null=True)
    response_body = peewee.TextField(null=True)

    class Meta:
        indexes = ((("client", "key"), True), (("created_at",), False))


class RateLimitWindow(BaseModel):
    client = peewee.CharField(max_length=80)
    # The window's number: seconds since the epoch divided by the window's length.
    window = peewee.BigIntegerField()
    count = peewee.IntegerField(default=0)

    class Meta:
        primary_key = peewee.CompositeKey("client", "window")


class Template(BaseModel):
    """A named template: per locale, the sources of the texts a notification of ``channel`` has."""

    name = peewee.CharField(max_length=100, primary_key=True)
    channel = peewee.CharField(max_length=8)
    default_locale = peewee.CharField(max_length=35)
    # {locale: {field: Jinja2 source}}; the fields are the channel's (subject, text, html / title, text).
    locales = JSONField()
    created_at = peewee.DateTimeField()
    updated_at = peewee.DateTimeField()


class Device(BaseModel):
    """A browser or phone a recipient registered; push notifications go to its active ones."""

    id = peewee.UUIDField(primary_key=True, default=uuid.uuid4)
    recipient_id = peewee.CharField(max_length=320, index=True)
    kind = peewee.CharField(max_length=16)
    # The endpoint URL (webpush, unifiedpush) or the token (fcm, apns).
    address = peewee.TextField()
    # sha256 of the address: unique with the kind. An FCM token may be 4,096 characters, more than a
    # PostgreSQL index entry holds, so the index holds its digest.
    address_digest = peewee.CharField(max_length=64)
    p256dh = peewee.CharField(max_length=100, null=True)
    auth = peewee.CharField(max_length=32, null=True)
    environment = peewee.CharField(max_length=16, null=True)
    label = peewee.CharField(max_length=100, null=True)
    active = peewee.BooleanField(default=True)
    created_at = peewee.DateTimeField()
    # Its latest registration.
    last_seen_at = peewee.DateTimeField()
    last_success_at = peewee.DateTimeField(null=True)
    disabled_at = peewee.DateTimeField(null=True)
    disabled_reason = peewee.TextField(null=True)

    class Meta:
        indexes = ((("kind", "address_digest"), True),)


PENDING_DELIVERY, DELIVERED_DELIVERY, FAILED_DELIVERY = "pending", "delivered", "failed"
DELIVERY_STATUSES = (PENDING_DELIVERY, DELIVERED_DELIVERY, FAILED_DELIVERY)
FALLBACK_KINDS = ("webhook", "outbox")


class Delivery(BaseModel):
    """One notification's delivery to one device, or to the webhook or outbox (``device_id`` null)."""

    notification_id = peewee.UUIDField()
    # The device's id, or the nil UUID for the webhook or outbox: part of the key, which no null can
    # be, so that recording an outcome is one upsert whether the row was written before or not.
    target_id = peewee.UUIDField()
    device_id = peewee.UUIDField(null=True)
    kind = peewee.CharField(max_length=16)
    status = peewee.CharField(max_length=10, default=PENDING_DELIVERY)
    attempts = peewee.IntegerField(default=0)
    provider_message_id = peewee.TextField(null=True)
    error = peewee.TextField(null=True)
    delivered_at = peewee.DateTimeField(null=True)
    updated_at = peewee.DateTimeField()

    class Meta:
        # The notification first: the one index finds a notification's deliveries as well.
        primary_key = peewee.CompositeKey("notification_id", "target_id")


EVENT_PENDING, EVENT_SENT, EVENT_FAILED = "pending", "sent", "failed"


class StatusEvent(BaseModel):
    """A status webhook's event, written with the change it reports, kept until the receiver took it."""

    id = peewee.BigAutoField()
    notification_id = peewee.UUIDField()
    type = peewee.CharField(max_length=40)
    occurred_at = peewee.DateTimeField()
    # The notification's stored columns just after the change, as its data is shown at that moment.
    notification = JSONField()
    status = peewee.CharField(max_length=8, default=EVENT_PENDING)
    attempts = peewee.IntegerField(default=0)
    next_attempt_at = peewee.DateTimeField()
    # Retried until STATUS_WEBHOOK_MAX_AGE after this: the change, or the operator's "send again".
    since = peewee.DateTimeField()
    # Bumped for each message published for the event and by the claim: only the current one sends.
    seq = peewee.IntegerField(default=0)
    lease_until = peewee.DateTimeField(null=True)
    last_error = peewee.TextField(null=True)
    finished_at = peewee.DateTimeField(null=True)

    class Meta:
        indexes = ((("notification_id", "id"), False), (("status", "next_attempt_at"), False))
