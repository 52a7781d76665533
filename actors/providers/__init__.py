"""Delivery providers: one small module per way of sending, chosen by settings.

A provider turns an ``Envelope`` into a delivered message or raises a ``DeliveryError``; a device
sender (``sender_for``) does the same for one message to one registered device.
Whether an error is worth retrying is decided once, by its type (see ``base``).
"""

from __future__ import annotations

import threading

import settings
from actors.providers.base import (
    BatchProvider,
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
from actors.providers.smtp import SmtpFailover, SmtpProvider
from actors.providers.webhook import WebhookProvider

__all__ = [
    "BatchProvider",
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
    "missing_settings",
    "provider_for",
    "sender_for",
]

_providers: dict[str, Provider] = {}


def provider_for(channel: str) -> Provider:
    """The provider for a channel, chosen once by settings: a server when its URL is set, else the outbox."""
    provider = _providers.get(channel)
    if provider is not None:
        return provider
    if channel == "email":
        relays = [SmtpProvider(url, settings.EMAIL_FROM, settings.SMTP_TIMEOUT) for url in settings.SMTP_URLS]
        if len(relays) > 1:
            provider = SmtpFailover(relays)
        elif relays:
            provider = relays[0]
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


_senders: dict[str, DeviceSender] = {}
_senders_lock = threading.Lock()
# What each kind of device needs configured; Web Push signs with a key it creates itself.
_REQUIRED_SETTINGS = {
    "webpush": (),
    "unifiedpush": (),
    "fcm": ("FCM_CREDENTIALS_FILE",),
    "apns": ("APNS_KEY_FILE", "APNS_KEY_ID", "APNS_TEAM_ID", "APNS_TOPIC"),
}


def missing_settings(kind: str) -> list[str]:
    """The settings a device of ``kind`` needs that are unset; empty when such devices can be sent to."""
    try:
        required = _REQUIRED_SETTINGS[kind]
    except KeyError:
        raise ValueError(f"unknown device kind {kind!r}") from None
    return [name for name in required if not getattr(settings, name)]


def sender_for(kind: str) -> DeviceSender:
    """The sender for a kind of device, made once from settings; ``NotConfigured`` names what is missing."""
    sender = _senders.get(kind)
    if sender is not None:
        return sender
    # One thread makes it while the others wait: each sender loads keys and a TLS trust store, tens of
    # milliseconds of CPU that every worker thread starting at once would otherwise spend.
    with _senders_lock:
        sender = _senders.get(kind)
        if sender is None:
            sender = _senders[kind] = _new_sender(kind)
        return sender


def _new_sender(kind: str) -> DeviceSender:
    sender: DeviceSender
    missing = missing_settings(kind)
    if missing:
        raise NotConfigured(f"{kind} devices cannot be sent to: set {', '.join(missing)}")
    # Imported here, not above: each sender's libraries (requests, google-auth, httpx and h2, about
    # 20 MB with cryptography) are loaded only by processes that send to that kind of device, not by
    # every process that imports the providers (the API, the email workers).
    if kind in ("webpush", "unifiedpush"):
        from actors.providers.webpush import WebPushSender

        sender = WebPushSender(
            kind,
            key_file=settings.VAPID_PRIVATE_KEY_FILE,
            subject=settings.VAPID_SUBJECT,
            allowlist=settings.PUSH_ENDPOINT_ALLOWLIST,
            timeout=settings.PUSH_TIMEOUT,
        )
    elif kind == "fcm":
        from actors.providers.fcm import FcmSender

        sender = FcmSender(
            credentials_file=settings.FCM_CREDENTIALS_FILE,
            project_id=settings.FCM_PROJECT_ID,
            url=settings.FCM_URL,
            timeout=settings.PUSH_TIMEOUT,
        )
    else:
        from actors.providers.apns import ApnsSender

        sender = ApnsSender(
            key_file=settings.APNS_KEY_FILE,
            key_id=settings.APNS_KEY_ID,
            team_id=settings.APNS_TEAM_ID,
            topic=settings.APNS_TOPIC,
            url=settings.APNS_URL,
            sandbox_url=settings.APNS_SANDBOX_URL,
            ca_file=settings.APNS_CA_FILE,
            timeout=settings.PUSH_TIMEOUT,
        )
    return sender
