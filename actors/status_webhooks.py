"""The status webhooks' actor: send one event of the outbox, record the answer, on the ``webhooks`` queue."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid

import dramatiq

import settings
from actors.providers import DeliveryError
from actors.providers.status_webhook import StatusWebhook
from storage import db, status_events
from storage.clock import from_db
from storage.models import StatusEvent
from storage.representation import NotificationSchema

logger = logging.getLogger(__name__)

QUEUE = "webhooks"
_schema = NotificationSchema()
_receiver: list[StatusWebhook] = []


def receiver() -> StatusWebhook:
    if not _receiver:
        _receiver.append(
            StatusWebhook(
                settings.STATUS_WEBHOOK_URL, settings.STATUS_WEBHOOK_SECRET, settings.STATUS_WEBHOOK_TIMEOUT
            )
        )
    return _receiver[0]


def webhook_id(event: StatusEvent) -> str:
    """The event's ``webhook-id``: derived from the event, so the same on every retry."""
    return "msg_" + uuid.uuid5(uuid.UUID(str(event.notification_id)), f"status event {event.id}").hex


def body_of(event: StatusEvent) -> str:
    occurred = from_db(event.occurred_at)
    assert occurred is not None
    if event.type == status_events.DEVICE_DISABLED:
        data = event.notification  # the device as the API shows it, stored so when it was disabled
    else:
        data = _schema.dump(status_events.restore(event.notification))
    return json.dumps({"type": event.type, "timestamp": occurred.isoformat(), "data": data})


def backoff(attempts: int, retry_after: float | None) -> float:
    """Seconds before the next attempt: doubling from RETRY_DELAY, at least what the receiver asked."""
    delay = min(settings.RETRY_DELAY * 2**attempts, settings.RETRY_MAX_DELAY)
    return max(delay, retry_after or 0.0)


# Nothing for the Retries middleware to do: the retry is the row's next_attempt_at, and a message
# lost on the way (a killed worker, an outage) is published again when its lease lapses.
@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def send_status_event(event_id: int, seq: int) -> None:
    """Send one status event if this message is still the event's current one."""
    db.connect(reuse_if_open=True)
    event = status_events.claim(event_id, seq, lease=settings.STATUS_WEBHOOK_TIMEOUT * 2 + 10)
    if event is None:
        return
    try:
        receiver().send(webhook_id(event), body_of(event), now=dt.datetime.now(dt.UTC))
    except DeliveryError as exc:
        delay = backoff(event.attempts, exc.retry_after)
        status_events.retry_later(event, error=exc.reason, delay=delay)
        logger.warning(
            "Status event %d for %s not taken (%s); retrying", event.id, event.notification_id, exc
        )
        return
    status_events.mark_sent(event)
    logger.info("Sent status event %d (%s) for %s", event.id, event.type, event.notification_id)
