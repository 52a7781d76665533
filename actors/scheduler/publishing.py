"""Publishing delivery messages: rows taken by a pass grouped into messages, and a forced one at once."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import dramatiq

import settings
from actors import broker
from actors.delivery import ACTORS
from actors.scheduler import wakeups
from storage import schedule
from storage.clock import utcnow
from storage.models import Notification
from storage.schedule import Publication

logger = logging.getLogger(__name__)

# The notifications of one message are due within this many seconds of each other; the message is
# sent at the last one's due time, so none goes early and none later than this for batching.
BATCH_WINDOW = dt.timedelta(seconds=0.1)


def message_id_for(notification_id: Any, seq: int) -> str:
    """The id of the broker message carrying a row's ``message_seq``; derived, so it need not be stored."""
    return str(uuid.uuid5(uuid.UUID(str(notification_id)), str(seq)))


def batches(taken: Sequence[Publication], size: int | None = None) -> Iterator[list[Publication]]:
    """Group rows into messages: one channel, at most ``size``, due within ``BATCH_WINDOW``."""
    size = size or settings.DELIVERY_BATCH_SIZE
    open_batches: dict[str, list[Publication]] = {}
    for publication in sorted(taken, key=lambda p: p.due_at):
        batch = open_batches.get(publication.channel)
        if batch and (len(batch) >= size or publication.due_at - batch[0].due_at > BATCH_WINDOW):
            yield batch
            batch = None
        if not batch:
            batch = open_batches[publication.channel] = []
        batch.append(publication)
    yield from (batch for batch in open_batches.values() if batch)


def publish(batch: Sequence[Publication]) -> dramatiq.Message:
    """Send one message for rows of one channel, with an ETA when the last is not due yet."""
    first = batch[0]
    delay_ms = int((max(p.due_at for p in batch) - utcnow()).total_seconds() * 1000)
    message = (
        ACTORS[first.channel]
        .message_with_options(args=({p.notification_id: p.seq for p in batch},))
        .copy(message_id=message_id_for(first.notification_id, first.seq))
    )
    return broker.enqueue(message, delay=delay_ms if delay_ms > 0 else None)


def publish_now(notification: Notification) -> str | None:
    """Publish a forced notification at once; on a broker failure leave it to the scheduler."""
    publication = Publication(
        str(notification.id), notification.channel, notification.due_at, notification.message_seq
    )
    try:
        return publish([publication]).message_id
    except (dramatiq.errors.BrokerError, OSError) as exc:
        logger.warning("Could not publish %s now (%s); the scheduler will", publication.notification_id, exc)
        schedule.release({publication.notification_id: publication.seq})
        wakeups.wake_now()
        return None
