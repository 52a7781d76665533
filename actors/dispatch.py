"""Publishing delivery messages: what the scheduler and the API use to hand work to the broker."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterator, Sequence

import dramatiq

import settings
from actors import broker
from actors.delivery import ACTORS
from storage import dispatching
from storage import notifications as store
from storage.clock import utcnow

logger = logging.getLogger(__name__)

# The notifications of one message are due within this many seconds of each other; the message is
# sent at the last one's due time, so none goes early and none later than this for batching.
BATCH_WINDOW = dt.timedelta(seconds=0.1)

# Events of the schedulers running in this process, set to make them look at the database now.
_wake_events: set[threading.Event] = set()


def batches(
    dispatches: Sequence[dispatching.Dispatch], size: int | None = None
) -> Iterator[list[dispatching.Dispatch]]:
    """Group dispatches into messages: one channel, at most ``size``, due within ``BATCH_WINDOW``."""
    size = size or settings.DELIVERY_BATCH_SIZE
    open_batches: dict[str, list[dispatching.Dispatch]] = {}
    for dispatch in sorted(dispatches, key=lambda d: d.due_at):
        batch = open_batches.get(dispatch.channel)
        if batch and (len(batch) >= size or dispatch.due_at - batch[0].due_at > BATCH_WINDOW):
            yield batch
            batch = None
        if not batch:
            batch = open_batches[dispatch.channel] = []
        batch.append(dispatch)
    yield from (batch for batch in open_batches.values() if batch)


def publish(dispatches: Sequence[dispatching.Dispatch]) -> dramatiq.Message:
    """Send one message for dispatches of one channel, with an ETA when the last is not due yet."""
    first = dispatches[0]
    delay_ms = int((max(d.due_at for d in dispatches) - utcnow()).total_seconds() * 1000)
    message = (
        ACTORS[first.channel]
        .message_with_options(args=({d.notification_id: d.seq for d in dispatches},))
        .copy(message_id=first.message_id)
    )
    return broker.enqueue(message, delay=delay_ms if delay_ms > 0 else None)


def send_now(notification: store.Notification) -> str | None:
    """Publish a forced notification at once; on a broker failure leave it to the scheduler."""
    dispatch = dispatching.Dispatch(
        str(notification.id), notification.channel, notification.due_at, notification.dispatch_seq
    )
    try:
        return publish([dispatch]).message_id
    except (dramatiq.errors.BrokerError, OSError) as exc:
        logger.warning("Could not publish %s now (%s); the scheduler will", dispatch.notification_id, exc)
        dispatching.release({dispatch.notification_id: dispatch.seq})
        wake_schedulers()
        return None


def register_wake_event(event: threading.Event) -> None:
    _wake_events.add(event)


def wake_schedulers() -> None:
    """Tell schedulers that a notification may be due now, so it need not wait for their next pass."""
    for event in list(_wake_events):
        event.set()
