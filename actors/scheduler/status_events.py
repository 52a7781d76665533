"""The status webhooks' pass: publishes each due event of the outbox, and again when its message was lost."""

from __future__ import annotations

import logging
import threading

import dramatiq

import settings
import storage
from actors import broker
from actors.status_webhooks import QUEUE, send_status_event
from storage import db, status_events
from storage.clock import utcnow

logger = logging.getLogger(__name__)

# A published event's message must be claimed this long after it is due, else it is published again.
EVENT_LEASE = 60.0

_OUTAGE_ERRORS: tuple[type[Exception], ...] = (*storage.DATABASE_ERRORS, dramatiq.errors.BrokerError, OSError)


def publish_due_events() -> int:
    """One pass: take the events due within the schedule horizon and publish a message for each."""
    db.connect(reuse_if_open=True)
    with storage.write_transaction():
        taken = status_events.take_due(horizon=settings.SCHEDULE_HORIZON, lease=EVENT_LEASE)
    for due in taken:
        delay_ms = int((due.at - utcnow()).total_seconds() * 1000)
        try:
            broker.enqueue(
                send_status_event.message(due.id, due.seq), delay=delay_ms if delay_ms > 0 else None
            )
        except _OUTAGE_ERRORS:
            status_events.release(due.id, due.seq)
            raise
    return len(taken)


class EventPublisher:
    """A thread running ``publish_due_events`` every SCHEDULER_INTERVAL until stopped."""

    def __init__(self, interval: float | None = None) -> None:
        self.interval = interval or settings.SCHEDULER_INTERVAL
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-events", daemon=True)

    def start(self) -> EventPublisher:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                publish_due_events()
                failures = 0
            except _OUTAGE_ERRORS as exc:
                storage.drop_connection()
                failures += 1
                logger.warning("Status event pass failed (%s); retrying", exc)
            self._stop.wait(min(self.interval * 2**failures, 30))


class EventPublisherMiddleware(dramatiq.Middleware):
    """Runs the status events' pass beside each worker process that consumes the webhooks queue."""

    def __init__(self) -> None:
        self.publisher: EventPublisher | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        queues = worker.consumer_whitelist
        if status_events.enabled() and (queues is None or QUEUE in queues):
            self.publisher = EventPublisher().start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self.publisher is not None:
            self.publisher.stop()
