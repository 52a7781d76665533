"""The official dramatiq-dashboard at /dashboard/dramatiq, for deployments on Dramatiq's Redis broker.

It reads Redis directly and knows nothing of RabbitMQ, hence only with ``BROKER_URL=redis://``.
It is installed apart (``pip install --no-deps -r requirements-dashboard.txt``): its metadata still
asks for dramatiq<2 and redis<5, though it works with the versions this service pins.
"""

from __future__ import annotations

import logging

import dramatiq
from flask import Flask

logger = logging.getLogger(__name__)

PREFIX = "/dashboard/dramatiq"


def mount(app: Flask, broker: dramatiq.Broker) -> bool:
    """Serve the dashboard of ``broker`` (a RedisBroker) under ``PREFIX``; False when it is not installed."""
    try:
        from dramatiq_dashboard.middleware import DashboardMiddleware
    except ImportError:
        logger.warning("dramatiq-dashboard is not installed; %s is not served", PREFIX)
        return False
    app.wsgi_app = DashboardMiddleware(app.wsgi_app, broker, PREFIX)  # type: ignore[method-assign]
    return True
