"""Entry point for ``dramatiq actors.worker``: the actors, the database and a scheduler per process."""

from __future__ import annotations

import logging
import sys

import dramatiq
from dramatiq.middleware.prometheus import Prometheus

import logs
import settings
import storage
from actors import EMBEDDED, broker
from actors import delivery as delivery  # registers the actors
from actors import status_webhooks as status_webhooks
from actors.heartbeat import Heartbeat
from actors.logcontext import LogContext
from actors.metrics import DeliveryMetrics
from actors.rabbitmq import QueueMismatch, RabbitmqBroker
from actors.scheduler import SchedulerMiddleware
from actors.scheduler.status_events import EventPublisherMiddleware

logger = logging.getLogger(__name__)

# Replaces Dramatiq's own format; in a worker process stderr is the pipe to Dramatiq's main process.
logs.configure(sys.stderr, replace=True)
if EMBEDDED:
    sys.exit("BROKER_URL is not set: without a broker the web process delivers notifications itself.")

if isinstance(broker, RabbitmqBroker):
    # A queue RabbitMQ holds with another type stops the worker here, named, instead of leaving its
    # consumers retrying for ever; an unreachable broker is waited for by the consumers, as before.
    try:
        broker.declare_queues()
    except QueueMismatch as exc:
        sys.exit(str(exc))
    except dramatiq.errors.ConnectionError as exc:
        logger.warning("RabbitMQ unreachable at start-up (%s); waiting for it", exc)

storage.configure(settings.DATABASE_URL)
broker.add_middleware(LogContext())
broker.add_middleware(SchedulerMiddleware())
broker.add_middleware(EventPublisherMiddleware())
broker.add_middleware(Heartbeat())
if settings.METRICS_ENABLED:
    broker.add_middleware(Prometheus())
    broker.add_middleware(DeliveryMetrics())
