"""Each worker process records, every few seconds, that it is alive and how many messages it holds."""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy

import settings
import storage
from storage import db, workers
from storage.clock import utcnow

logger = logging.getLogger(__name__)

# A process silent this long is gone; its row is deleted by the next heartbeat of any process.
FORGET_AFTER = dt.timedelta(days=1)


class Heartbeat(dramatiq.Middleware):
    """Counts the messages in flight in this process and writes them to its ``worker_process`` row."""

    def __init__(self, interval: float | None = None) -> None:
        self.interval = interval or settings.WORKER_HEARTBEAT_INTERVAL
        self.in_flight = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._queues = ""
        self._started_at = utcnow()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        consumed = worker.consumer_whitelist or broker.get_declared_queues()
        self._queues = ",".join(sorted(q for q in consumed if not q.endswith((".DQ", ".XQ"))))
        self._started_at = utcnow()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        try:
            with db.connection_context():
                workers.leave(host=settings.HOSTNAME, pid=os.getpid())
        except storage.DATABASE_ERRORS as exc:
            logger.warning("Could not remove this worker's heartbeat row: %s", exc)

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        with self._lock:
            self.in_flight += 1

    def after_process_message(
        self, broker: dramatiq.Broker, message: MessageProxy, *, result: Any = None, exception: Any = None
    ) -> None:
        with self._lock:
            self.in_flight -= 1

    after_skip_message = after_process_message

    def beat(self) -> None:
        with db.connection_context():
            workers.beat(
                host=settings.HOSTNAME,
                pid=os.getpid(),
                queues=self._queues,
                in_flight=max(0, self.in_flight),
                started_at=self._started_at,
            )
            workers.forget_silent(FORGET_AFTER)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
            except storage.DATABASE_ERRORS as exc:
                logger.warning("Heartbeat not recorded: %s", exc)
            self._stop.wait(self.interval)
