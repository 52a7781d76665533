"""Prometheus metrics of the API at ``/metrics/prometheus``: requests by URL rule, notifications by status.

Request metrics come from ``prometheus-flask-exporter``, grouped by URL rule so that
``/notifications/<uuid:notification_id>`` is one series, not one per id. Under gunicorn with
``PROMETHEUS_MULTIPROC_DIR`` every worker writes its counts there and whichever worker answers the
scrape reports the sum. The gauges by status are read from the database at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator

import prometheus_client as prom
from flask import Flask, Response
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_flask_exporter import PrometheusMetrics

from storage import metrics as store_metrics
from storage.models import CHANNELS, FAILED, PENDING, PROCESSING

PATH = "/metrics/prometheus"

ACCEPTED_NOTIFICATIONS = prom.Counter(
    "notifications_accepted", "Notifications accepted by the API.", ["channel"], registry=None
)
# Each channel's child, made once (present at 0 from the start, so rate() sees the first one).
ACCEPTED_BY_CHANNEL = {channel: ACCEPTED_NOTIFICATIONS.labels(channel) for channel in CHANNELS}


# The statuses a notification waits in. Delivered and cancelled ones only pile up: counting them at
# every scrape would read the whole table, and their rate is what the workers' counters give.
GAUGED = (PENDING, PROCESSING, FAILED)


class NotificationsByStatus(Collector):
    """``notifications{channel, status}``: how many wait now, one index-only aggregate per scrape."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "notifications", "Notifications scheduled, processing or failed.", labels=["channel", "status"]
        )
        counts = store_metrics.counts_by_status(GAUGED)
        for channel in CHANNELS:
            for status in GAUGED:
                name = store_metrics.STATUS_NAMES[status]
                gauge.add_metric([channel, name], counts.get((channel, status), 0))
        yield gauge


def init_app(app: Flask, *extra: Collector) -> None:
    """Track the app's requests and serve them, with ``extra`` collectors, at ``PATH``."""
    # A registry per app: the exporter registers its request metrics on it, and tests make many apps.
    registry = prom.CollectorRegistry(auto_describe=True)
    exporter = PrometheusMetrics(app, path=None, registry=registry, group_by="url_rule")
    by_status = NotificationsByStatus()
    multiprocess = bool(app.config["PROMETHEUS_MULTIPROC_DIR"])

    def scraped() -> prom.CollectorRegistry:
        if multiprocess:
            # Counters of every gunicorn worker, summed from their files, plus the database's gauges.
            summed = prom.CollectorRegistry()
            MultiProcessCollector(summed)
            summed.register(by_status)
            return summed
        return registry

    if not multiprocess:
        for collector in (ACCEPTED_NOTIFICATIONS, by_status, *extra):
            registry.register(collector)

    @app.get(PATH)
    @exporter.do_not_track()
    def prometheus_metrics() -> Response:
        return Response(prom.generate_latest(scraped()), content_type=prom.CONTENT_TYPE_LATEST)
