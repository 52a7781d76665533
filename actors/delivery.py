"""Thin actors: claim a notification, deliver it through its channel's provider, record the outcome."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import dramatiq
import peewee

import settings
import storage
from actors.providers import DeliveryError, Envelope, PermanentDeliveryError, provider_for
from storage import db, events
from storage import notifications as store
from storage.clock import utcnow

logger = logging.getLogger(__name__)

_RETRY_OPTIONS: dict[str, Any] = {
    "max_retries": settings.MAX_RETRY_ATTEMPTS,
    "min_backoff": max(1, int(settings.RETRY_DELAY * 1000)),
    "max_backoff": max(1, int(settings.RETRY_MAX_DELAY * 1000)),
    "throws": (PermanentDeliveryError,),
}


@dramatiq.actor(queue_name="push", **_RETRY_OPTIONS)
def deliver_push(notification_id: str, seq: int) -> None:
    deliver(notification_id, seq)


@dramatiq.actor(queue_name="email", **_RETRY_OPTIONS)
def deliver_email(notification_id: str, seq: int) -> None:
    deliver(notification_id, seq)


ACTORS: dict[str, dramatiq.Actor] = {"push": deliver_push, "email": deliver_email}


def envelope_of(notification: store.Notification) -> Envelope:
    return Envelope(
        notification_id=str(notification.id),
        channel=notification.channel,
        recipient_id=notification.recipient_id,
        content=notification.content,
        subject=notification.subject,
        title=notification.title,
        data=notification.data,
    )


def deliver(notification_id: str, seq: int) -> None:
    """Deliver once, for the message ``seq`` only; any other message for the row does nothing."""
    try:
        _deliver(notification_id, seq)
    except (peewee.OperationalError, peewee.InterfaceError) as exc:
        # Wait out a database outage here, so that it costs the message one retry, not all of them.
        logger.warning("Database unavailable while delivering %s: %s", notification_id, exc)
        storage.wait_until_available(settings.DATABASE_WAIT)
        raise dramatiq.Retry(f"database unavailable: {exc}", delay=100) from exc


@dataclass(frozen=True)
class Outcome:
    """What a message did to its notification, for the metrics middleware to count once."""

    channel: str
    delivered: bool
    lateness: float = 0.0  # seconds from the due time to delivery


# The outcome of the message this worker thread is handling, if it finished its notification.
current_outcome = threading.local()


def _deliver(notification_id: str, seq: int) -> None:
    host = settings.HOSTNAME
    current_outcome.value = None
    # Each worker thread keeps its connection from message to message; an outage closes it.
    db.connect(reuse_if_open=True)
    notification = store.claim(notification_id, seq, host=host, lease=settings.PROCESSING_LEASE)
    if notification is None:
        # Cancelled, delivered, forced or re-sent since this message was published: nothing to do.
        events.record(notification_id, "skipped", host, detail=f"stale message {seq}")
        logger.info("Skipped %s: message %d is no longer current", notification_id, seq)
        return
    channel = notification.channel
    attempt = notification.attempt_count - notification.attempts_at_force
    if attempt > settings.MAX_RETRY_ATTEMPTS + 1:
        # Only reachable when workers kept dying mid-delivery: stop before trying yet again.
        if store.mark_failed(notification_id, seq, host=host, error="gave up: workers stopped mid-delivery"):
            current_outcome.value = Outcome(channel, delivered=False)
        return
    provider = provider_for(channel)
    try:
        provider.deliver(envelope_of(notification))
    except Exception as exc:
        _record_failure(notification_id, seq, channel, attempt, exc)
        raise
    if store.mark_delivered(notification_id, seq, host=host):
        lateness = (utcnow() - notification.due_at).total_seconds()
        current_outcome.value = Outcome(channel, delivered=True, lateness=max(0.0, lateness))
    logger.info("Delivered %s via %s on attempt %d", notification_id, provider.name, attempt)


def _record_failure(notification_id: str, seq: int, channel: str, attempt: int, exc: Exception) -> None:
    host = settings.HOSTNAME
    transient = not isinstance(exc, DeliveryError) or exc.transient
    reason = exc.reason if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
    if transient and attempt <= settings.MAX_RETRY_ATTEMPTS:
        retry_after = exc.retry_after if isinstance(exc, DeliveryError) else None
        # The retry message must arrive within this lease, else the scheduler sends another.
        lease = max(settings.RETRY_MAX_DELAY, retry_after or 0) + settings.PROCESSING_LEASE
        store.release_for_retry(notification_id, seq, host=host, error=reason, lease=lease)
        logger.warning("Attempt %d for %s failed, will retry: %s", attempt, notification_id, reason)
        if retry_after is not None:
            delay = min(retry_after, settings.RETRY_MAX_DELAY)
            raise dramatiq.Retry(reason, delay=int(delay * 1000)) from exc
        return
    if store.mark_failed(notification_id, seq, host=host, error=reason):
        current_outcome.value = Outcome(channel, delivered=False)
    logger.error("Failed %s after %d attempts: %s", notification_id, attempt, reason)
