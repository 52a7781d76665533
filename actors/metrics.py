"""Prometheus counters of the workers: notifications delivered and failed, how late they went out, and
push deliveries per kind of device and outcome, and devices disabled per kind and reason.

The counters are made on first use, when the process has booted and Dramatiq's Prometheus middleware
has pointed ``prometheus_client`` at its multiprocess directory (``after_`` hooks run in reverse
order, so making them in ``after_process_boot`` would be too early), so the exposition server of
each channel (``PUSH_METRICS_PORT``, ``EMAIL_METRICS_PORT``) sums them over the worker processes.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy

from actors import delivery

logger = logging.getLogger(__name__)

Observed = delivery.Outcome | delivery.DeviceOutcome | delivery.DeviceDisabled

# Seconds between a notification's due time and its delivery.
LATENESS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, float("inf"))


@dataclass(frozen=True)
class _Metrics:
    delivered: Any
    failed: Any
    lateness: Any
    device_deliveries: Any
    devices_disabled: Any

    def collectors(self) -> list[Any]:
        return [self.delivered, self.failed, self.lateness, self.device_deliveries, self.devices_disabled]


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
        device_deliveries=prom.Counter(
            "push_deliveries",
            "Attempts of push deliveries, per kind of device (webhook or outbox without one) and outcome.",
            ["kind", "outcome"],
            registry=None,
        ),
        devices_disabled=prom.Counter(
            "push_devices_disabled",
            "Devices disabled because their push service said they are gone.",
            ["kind", "reason"],
            registry=None,
        ),
    )


# The codes push services give for a device that is gone (FCM's, then APNs'); a reason is labelled
# by its HTTP status and such a code, so that the label's values stay few whatever else it says.
_GONE_CODES = re.compile(
    r"\b(UNREGISTERED|SENDER_ID_MISMATCH|INVALID_ARGUMENT|Unregistered|BadDeviceToken|DeviceTokenNotForTopic)\b"
)
_HTTP_STATUS = re.compile(r"\bHTTP (\d{3})\b")


def reason_label(reason: str) -> str:
    """A disabled device's reason as a label: ``410``, ``404 UNREGISTERED``, ``400 BadDeviceToken``."""
    status, code = _HTTP_STATUS.search(reason), _GONE_CODES.search(reason)
    words = [match.group(1) for match in (status, code) if match]
    return " ".join(words) or "other"


class DeliveryMetrics(dramatiq.Middleware):
    """After each delivery message, counts the outcomes that very message recorded.

    The delivery code leaves an outcome in ``delivery.current_outcome`` only for a notification its
    own write finished, so a duplicate or stale message counts nothing.
    """

    def __init__(self) -> None:
        self._metrics: _Metrics | None = None
        self._lock = threading.Lock()

    @property
    def metrics(self) -> _Metrics:
        with self._lock:
            if self._metrics is None:
                self._metrics = _make_metrics()
            return self._metrics

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        delivery.current_outcome.value = []

    def after_process_message(
        self, broker: dramatiq.Broker, message: MessageProxy, *, result: Any = None, exception: Any = None
    ) -> None:
        outcomes = getattr(delivery.current_outcome, "value", None) or []
        delivery.current_outcome.value = []
        self.observe_all(outcomes)

    after_skip_message = after_process_message

    def observe_all(self, outcomes: Sequence[Observed]) -> None:
        """Count a message's outcomes: each counter once per label, by how many, and each lateness."""
        if not outcomes:
            return
        metrics = self.metrics
        counts: collections.Counter[Observed] = collections.Counter()
        lateness: dict[str, Any] = {}  # by channel, each looked up once
        for outcome in outcomes:
            if isinstance(outcome, delivery.Outcome) and outcome.delivered:
                channel = outcome.channel
                if channel not in lateness:
                    lateness[channel] = metrics.lateness.labels(channel)
                lateness[channel].observe(outcome.lateness)
                outcome = delivery.Outcome(channel, delivered=True)  # counted by channel alone
            counts[outcome] += 1
        for outcome, count in counts.items():
            if isinstance(outcome, delivery.DeviceOutcome):
                metrics.device_deliveries.labels(outcome.kind, outcome.outcome).inc(count)
            elif isinstance(outcome, delivery.DeviceDisabled):
                metrics.devices_disabled.labels(outcome.kind, reason_label(outcome.reason)).inc(count)
            elif outcome.delivered:
                metrics.delivered.labels(outcome.channel).inc(count)
            else:
                metrics.failed.labels(outcome.channel).inc(count)
