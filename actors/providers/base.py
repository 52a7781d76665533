"""What every provider shares: the envelope it sends, its errors, and the interface it implements."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Envelope:
    """What a provider needs to send one notification; no storage types leak in."""

    notification_id: str
    channel: str  # "push" or "email"
    recipient_id: str
    content: str
    subject: str | None = None
    title: str | None = None
    data: dict[str, Any] | None = field(default=None)
    html: str | None = None  # email: the HTML alternative to ``content``
    # Where an email goes when the recipient id is not the address itself: the profile's.
    address: str | None = None
    # An email's one-click unsubscribe link (RFC 8058), if it has one.
    unsubscribe_url: str | None = None


class DeliveryError(Exception):
    """Delivery did not happen; ``transient`` says whether trying again may help."""

    transient = False

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        #: Seconds the receiving side asked us to wait (e.g. HTTP Retry-After), if any.
        self.retry_after = retry_after


class TransientDeliveryError(DeliveryError):
    """A failure that may pass: timeouts, refused connections, 4xx SMTP, 5xx/429 HTTP."""

    transient = True


class PermanentDeliveryError(DeliveryError):
    """A failure that will not pass by retrying: a rejected recipient, a 4xx HTTP answer."""


class Provider(Protocol):
    """Sends one envelope; must be safe to call from several threads at once.

    ``deliver`` may return where the message went (the SMTP relay that took it) for the history.
    """

    name: str

    def deliver(self, envelope: Envelope) -> str | None: ...


class BatchProvider(Provider, Protocol):
    """A provider that also sends several envelopes at once (the webhook, pipelined).

    ``deliver_many`` answers for each envelope, in order, what ``deliver`` would have done: None
    for delivered, else the ``DeliveryError`` it would have raised.
    """

    def deliver_many(self, envelopes: Sequence[Envelope]) -> list[DeliveryError | None]: ...


def http_failure(status: int, reason: str, retry_after: float | None) -> DeliveryError:
    """A push service's error answer once its own codes are read: 429 and 5xx may pass (after
    ``retry_after`` seconds, when it said), any other answer will not."""
    if status == 429 or 500 <= status <= 599:
        return TransientDeliveryError(reason, retry_after=retry_after)
    return PermanentDeliveryError(reason)


class DeviceGone(PermanentDeliveryError):
    """The push service says the device no longer exists: disable it, never send to it again."""


class NotConfigured(PermanentDeliveryError):
    """A device of a kind whose credentials the operator has not set."""


@dataclass(frozen=True)
class PushMessage:
    """What a push notification says, with how each push service should treat it."""

    notification_id: str
    recipient_id: str
    content: str
    title: str | None = None
    data: dict[str, Any] | None = None
    ttl: int = 86400  # seconds the push service keeps it for an unreachable device
    urgency: str = "normal"  # very-low, low, normal, high (RFC 8030)
    collapse_key: str | None = None  # a newer one with the same key replaces an undelivered older one


# FCM reserves these data keys for itself (notification_id is ours, added to every message). Here, not
# in fcm.py, so that the API can refuse them without loading FCM's libraries.
_RESERVED_KEYS = frozenset({"notification_id", "from", "message_type"})
_RESERVED_PREFIXES = ("google", "gcm")


def reserved_data_keys(data: Mapping[str, Any]) -> list[str]:
    """The keys of a push's ``data`` that FCM would refuse or that would hide ours, in their order."""
    return [key for key in data if key in _RESERVED_KEYS or key.lower().startswith(_RESERVED_PREFIXES)]


@dataclass(frozen=True)
class Device:
    """A recipient's registered device, as a sender needs it."""

    id: str
    kind: str  # webpush, unifiedpush, fcm, apns
    address: str  # the endpoint URL (webpush, unifiedpush) or the token (fcm, apns)
    p256dh: str | None = None  # webpush, unifiedpush: the subscription's keys, base64url
    auth: str | None = None
    environment: str | None = None  # apns: production or sandbox
    last_seen_at: dt.datetime | None = None  # naive UTC: its latest registration


class DeviceSender(Protocol):
    """Sends one message to one device; safe to call from several threads at once.

    Returns the push service's id for the message. Raises ``DeviceGone`` when the device no longer
    exists, ``TransientDeliveryError`` (with ``retry_after``) when trying again may help, and
    ``PermanentDeliveryError`` when it will not.
    """

    kind: str

    def send(self, device: Device, message: PushMessage) -> str: ...
