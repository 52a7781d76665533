"""Delivery providers: one small module per way of sending, chosen by settings.

A provider turns an ``Envelope`` into a delivered message or raises a ``DeliveryError``.
Whether an error is worth retrying is decided once, by its type (see ``base``).
"""

from __future__ import annotations

import settings
from actors.providers.base import (
    DeliveryError,
    Device,
    DeviceGone,
    DeviceSender,
    Envelope,
    NotConfigured,
    PermanentDeliveryError,
    Provider,
    PushMessage,
    TransientDeliveryError,
)
from actors.providers.outbox import JsonLinesOutbox, MaildirOutbox
from actors.providers.smtp import SmtpProvider
from actors.providers.webhook import WebhookProvider

__all__ = [
    "DeliveryError",
    "Device",
    "DeviceGone",
    "DeviceSender",
    "Envelope",
    "NotConfigured",
    "PermanentDeliveryError",
    "Provider",
    "PushMessage",
    "TransientDeliveryError",
    "provider_for",
]

_providers: dict[str, Provider] = {}


def provider_for(channel: str) -> Provider:
    """The provider for a channel, chosen once by settings: a server when its URL is set, else the outbox."""
    provider = _providers.get(channel)
    if provider is not None:
        return provider
    if channel == "email":
        if settings.SMTP_URL:
            provider = SmtpProvider(settings.SMTP_URL, settings.EMAIL_FROM, settings.SMTP_TIMEOUT)
        else:
            provider = MaildirOutbox(settings.OUTBOX_DIR, sender=settings.EMAIL_FROM)
    elif channel == "push":
        if settings.PUSH_WEBHOOK_URL:
            provider = WebhookProvider(settings.PUSH_WEBHOOK_URL, settings.PUSH_TIMEOUT)
        else:
            provider = JsonLinesOutbox(settings.OUTBOX_DIR)
    else:
        raise ValueError(f"unknown channel {channel!r}")
    # setdefault is atomic, so threads racing on the first call all end up with the same provider.
    return _providers.setdefault(channel, provider)
