"""The scheduler's loop: hands notifications to the broker as they come within the schedule horizon.

The database is the schedule. Only rows due within ``SCHEDULE_HORIZON`` seconds are published,
with Dramatiq's ETA for the seconds that remain, so a notification due next week costs the broker
and the workers nothing until then. The same pass publishes again rows whose message was lost or
whose worker died mid-delivery. Any number of schedulers may run at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import dramatiq

import settings
import storage
from actors.delivery import ACTORS
from actors.scheduler import wakeups
from actors.scheduler.publishing import batches, publish
from storage import db, schedule
from storage.schedule import Publication

logger = logging.getLogger(__name__)


# A scheduler that dies between taking a batch and publishing it leaves the batch to the others
# after this many seconds.
PUBLISH_LEASE = 10.0
# How often a scheduler looks for work nobody finished: rows whose message or worker lease ran out,
# and passes a dead scheduler left. Those leases are minutes long; looking at each pass would read
# the leases index, dead entries and all, every second.
RECOVERY_INTERVAL = 10.0

# What a pass raises while the database or the broker is away: waited out, never the thread's end.
_OUTAGE_ERRORS: tuple[type[Exception], ...] = (*storage.DATABASE_ERRORS, dramatiq.errors.BrokerError, OSError)


def dispatch_due(
    channels: Iterable[str] | None = None, *, limit: int | None = None, recover: bool = True
) -> int:
    """Publish one batch of due rows; return how many rows were taken.

    With ``recover``, the pass first takes back what others left unfinished (see RECOVERY_INTERVAL).
    """
    horizon = settings.SCHEDULE_HORIZON
    # The scheduler's thread keeps its connection from pass to pass; an outage closes it.
    db.connect(reuse_if_open=True)
    # Committed before publishing, so that a worker never waits on this transaction.
    with storage.write_transaction():
        if recover:
            schedule.undo_abandoned_passes()
        taken = schedule.take_due(
            horizon=horizon,
            # The message's lease: from now until DISPATCH_LEASE after the last possible due time.
            lease=horizon + settings.DISPATCH_LEASE,
            limit=limit or settings.DISPATCH_BATCH_SIZE,
            channels=channels,
            lapsed=recover,
        )
        pass_id = schedule.begin_pass(taken, lease=PUBLISH_LEASE)
    published: list[Publication] = []
    try:
        for batch in batches(taken):
            publish(batch)
            published += batch
    finally:
        sent = {p.notification_id for p in published}
        with storage.write_transaction():
            schedule.finish_pass(
                pass_id,
                published=published,
                unpublished=[p for p in taken if p.notification_id not in sent],
                host=settings.HOSTNAME,
            )
    if taken:
        logger.debug("Dispatched %d notifications", len(published))
    return len(taken)


class Scheduler:
    """A loop that runs ``dispatch_due`` in a thread until stopped."""

    def __init__(self, channels: Iterable[str] | None = None, interval: float | None = None) -> None:
        self.channels = sorted(channels) if channels is not None else None
        self.interval = interval or settings.SCHEDULER_INTERVAL
        self.wake = threading.Event()
        wakeups.register(self.wake)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Scheduler:
        self._thread = threading.Thread(target=self.run, name="scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self.wake.set()
        wakeups.unregister(self.wake)
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        logger.info("Scheduler started for %s", ", ".join(self.channels or ACTORS))
        listener = wakeups.listener()
        try:
            self._loop(listener)
        finally:
            if listener is not None:
                listener.close()
        logger.info("Scheduler stopped")

    def _loop(self, listener: wakeups.DueListener | None) -> None:
        failures = 0
        recovered_at = -RECOVERY_INTERVAL
        while not self._stop.is_set():
            try:
                recover = time.monotonic() - recovered_at >= RECOVERY_INTERVAL
                full = dispatch_due(self.channels, recover=recover) >= settings.DISPATCH_BATCH_SIZE
                if recover:
                    recovered_at = time.monotonic()
                failures = 0
            except _OUTAGE_ERRORS as exc:
                # The database or broker is away: wait and try again; nothing was taken.
                storage.drop_connection()
                failures += 1
                full = False
                logger.warning("Scheduler pass failed (%s); retrying", exc)
            if full:
                continue
            timeout = min(self.interval * 2**failures, 30)
            if listener is not None and not failures:
                listener.wait(timeout)
            else:
                self.wake.wait(timeout)
            self.wake.clear()


class SchedulerMiddleware(dramatiq.Middleware):
    """Runs a scheduler beside each worker process, for the channels that worker consumes."""

    def __init__(self) -> None:
        self.scheduler: Scheduler | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        queues = worker.consumer_whitelist or set(ACTORS)
        channels = sorted(q for q in queues if q in ACTORS)
        if channels:  # a webhooks-only worker has no channel to schedule
            self.scheduler = Scheduler(channels).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
