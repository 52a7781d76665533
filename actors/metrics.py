"""Prometheus counters of the workers: notifications delivered and failed, and how late they went out.

The counters are made on first use, when the process has booted and Dramatiq's Prometheus middleware
has pointed ``prometheus_client`` at its multiprocess directory (``after_`` hooks run in reverse
order, so making them in ``after_process_boot`` would be too early), so the exposition server of
each channel (``PUSH_METRICS_PORT``, ``EMAIL_METRICS_PORT``) sums them over the worker processes.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import dramatiq
import peewee
from dramatiq.broker import MessageProxy

import settings
from storage import db
from storage import notifications as store
from storage.clock import utcnow

logger = logging.getLogger(__name__)

# Seconds between a notification's due time and its delivery.
LATENESS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, float("inf"))


@dataclass(frozen=True)
class _Metrics:
    delivered: Any
    failed: Any
    lateness: Any

    def collectors(self) -> list[Any]:
        return [self.delivered, self.failed, self.lateness]


def _make_metrics() -> _Metrics:
    # Imported here, not at the top: see the module docstring.
    import prometheus_client as prom

    return _Metrics(
        delivered=prom.Counter(
            "notifications_delivered", "Notifications delivered.", ["channel"], registry=None
        ),
        failed=prom.Counter(
            "notifications_failed", "Notifications that failed for good.", ["channel"], registry=None
        ),
        lateness=prom.Histogram(
            "notifications_delivery_lateness_seconds",
            "Seconds from a notification's due time to its delivery.",
            ["channel"],
            buckets=LATENESS_BUCKETS,
            registry=None,
        ),
    )


class DeliveryMetrics(dramatiq.Middleware):
    """After each delivery message, counts the outcome this very message recorded, read back from its row.

    Reading the row (one primary-key lookup) keeps the delivery code free of metrics, and counts a
    notification once: only the message whose dispatch number, host and finishing time match.
    """

    def __init__(self) -> None:
        self._metrics: _Metrics | None = None
        self._lock = threading.Lock()
        self._started: dict[str, Any] = {}

    @property
    def metrics(self) -> _Metrics:
        with self._lock:
            if self._metrics is None:
                self._metrics = _make_metrics()
            return self._metrics

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self._started[message.message_id] = utcnow()

    def after_process_message(
        self, broker: dramatiq.Broker, message: MessageProxy, *, result: Any = None, exception: Any = None
    ) -> None:
        started = self._started.pop(message.message_id, None)
        if started is None or len(message.args) != 2 or message.queue_name not in store.CHANNELS:
            return
        notification_id, seq = message.args
        try:
            with db.connection_context():
                row = (
                    store.Notification.select(
                        store.Notification.status,
                        store.Notification.dispatch_seq,
                        store.Notification.worker_host,
                        store.Notification.due_at,
                        store.Notification.delivered_at,
                        store.Notification.updated_at,
                    )
                    .where(store.Notification.id == notification_id)
                    .first()
                )
        except (peewee.DatabaseError, ValueError) as exc:
            logger.debug("No metrics for %s: %s", notification_id, exc)
            return
        if row is None or row.dispatch_seq != seq or row.worker_host != settings.HOSTNAME:
            return
        if row.updated_at < started:  # finished by an earlier copy of this message
            return
        self.observe(message.queue_name, row)

    after_skip_message = after_process_message

    def observe(self, channel: str, row: store.Notification) -> None:
        if row.status == store.DELIVERED and row.delivered_at is not None:
            self.metrics.delivered.labels(channel).inc()
            lateness = (row.delivered_at - row.due_at).total_seconds()
            self.metrics.lateness.labels(channel).observe(max(0.0, lateness))
        elif row.status == store.FAILED:
            self.metrics.failed.labels(channel).inc()
