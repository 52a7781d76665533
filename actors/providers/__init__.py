"""Delivery providers: one small module per way of sending, chosen by settings.

A provider turns an ``Envelope`` into a delivered message or raises a ``DeliveryError``.
Whether an error is worth retrying is decided here, once, by its type.
"""

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


_providers: dict[str, Provider] = {}


def provider_for(channel: str) -> Provider:
    """The provider for a channel, chosen once by settings: a server when its URL is set, else the outbox."""
    provider = _providers.get(channel)
    if provider is not None:
        return provider
    # Imported here: the provider modules import this one, and settings are read only when first needed.
    import settings

    if channel == "email":
        if settings.SMTP_URL:
            from actors.providers.smtp import SmtpProvider

            provider = SmtpProvider(settings.SMTP_URL, settings.EMAIL_FROM, settings.SMTP_TIMEOUT)
        else:
            from actors.providers.outbox import MaildirOutbox

            provider = MaildirOutbox(settings.OUTBOX_DIR, sender=settings.EMAIL_FROM)
    elif channel == "push":
        if settings.PUSH_WEBHOOK_URL:
            from actors.providers.webhook import WebhookProvider

            provider = WebhookProvider(settings.PUSH_WEBHOOK_URL, settings.PUSH_TIMEOUT)
        else:
            from actors.providers.outbox import JsonLinesOutbox

            provider = JsonLinesOutbox(settings.OUTBOX_DIR)
    else:
        raise ValueError(f"unknown channel {channel!r}")
    # setdefault is atomic, so threads racing on the first call all end up with the same provider.
    return _providers.setdefault(channel, provider)
