"""The broker, configured once, before any actor module is imported.

``BROKER_URL`` picks RabbitMQ (``amqp://``, one URL per node of a cluster) or Redis (``redis://``);
unset, the service runs on an in-process broker and the web process runs the workers itself (the
embedded, single-machine mode).
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.stub import StubBroker

import settings
from actors.rabbitmq import RabbitmqBroker


def _make_broker(urls: tuple[str, ...]) -> dramatiq.Broker:
    if not urls:
        return StubBroker()
    if urls[0].startswith(("redis://", "rediss://")):
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(url=urls[0])
    # With confirms a publish returns only once RabbitMQ has taken the message: for a quorum
    # queue, once a majority of its nodes has written it.
    return RabbitmqBroker(
        urls, queue_type=settings.RABBITMQ_QUEUE_TYPE, confirm_delivery=settings.PUBLISH_CONFIRMS
    )


broker = _make_broker(settings.BROKER_URLS)
dramatiq.set_broker(broker)

EMBEDDED: bool = isinstance(broker, StubBroker)
REDIS: bool = hasattr(broker, "client")  # RedisBroker; RabbitMQ otherwise, unless EMBEDDED


def ping() -> None:
    """Raise when the broker cannot be reached (on a cluster: none of its nodes answers)."""
    if isinstance(broker, RabbitmqBroker):
        broker.ping()
    elif hasattr(broker, "client"):  # RedisBroker
        broker.client.ping()
