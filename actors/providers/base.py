"""What every provider shares: the envelope it sends, its errors, and the interface it implements."""

from __future__ import annotations

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
    """Sends one envelope; must be safe to call from several threads at once."""

    name: str

    def deliver(self, envelope: Envelope) -> None: ...
