"""Publishing delivery messages: what the scheduler and the API use to hand work to the broker."""

from __future__ import annotations

import logging
import threading

import dramatiq

from actors import broker
from actors.delivery import ACTORS
from storage import notifications as store
from storage.clock import utcnow

logger = logging.getLogger(__name__)

# Events of the schedulers running in this process, set to make them look at the database now.
_wake_events: set[threading.Event] = set()


def publish(dispatch: store.Dispatch) -> dramatiq.Message:
    """Send the message for one dispatch, with its ETA when it is not due yet."""
    delay_ms = int((dispatch.due_at - utcnow()).total_seconds() * 1000)
    message = (
        ACTORS[dispatch.channel]
        .message_with_options(args=(dispatch.notification_id, dispatch.seq))
        .copy(message_id=dispatch.message_id)
    )
    return broker.enqueue(message, delay=delay_ms if delay_ms > 0 else None)


def send_now(notification: store.Notification) -> str | None:
    """Publish a forced notification at once; on a broker failure leave it to the scheduler."""
    dispatch = store.Dispatch(
        str(notification.id), notification.channel, notification.due_at, notification.dispatch_seq
    )
    try:
        return publish(dispatch).message_id
    except (dramatiq.errors.BrokerError, OSError) as exc:
        logger.warning("Could not publish %s now (%s); the scheduler will", dispatch.notification_id, exc)
        store.release_dispatches([dispatch])
        wake_schedulers()
        return None


def register_wake_event(event: threading.Event) -> None:
    _wake_events.add(event)


def wake_schedulers() -> None:
    """Tell schedulers that a notification may be due now, so it need not wait for their next pass."""
    for event in list(_wake_events):
        event.set()
