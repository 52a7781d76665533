"""Entry point for ``dramatiq actors.worker``: the actors, the database and a scheduler per process."""

from __future__ import annotations

import logging
import sys

import settings
import storage
from actors import EMBEDDED, broker
from actors import delivery as delivery  # registers the actors
from actors.scheduler import SchedulerMiddleware

logging.basicConfig(
    level=settings.LOG_LEVEL,
    format=f"%(asctime)s %(levelname)s [{settings.HOSTNAME}] %(name)s: %(message)s",
)
if EMBEDDED:
    sys.exit("BROKER_URL is not set: without a broker the web process delivers notifications itself.")

storage.configure(settings.DATABASE_URL)
broker.add_middleware(SchedulerMiddleware())
if settings.METRICS_ENABLED:
    from dramatiq.middleware.prometheus import Prometheus

    broker.add_middleware(Prometheus())
