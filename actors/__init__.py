"""The broker, configured once, before any actor module is imported.

``BROKER_URL`` picks RabbitMQ (``amqp://``) or Redis (``redis://``); unset, the service runs on an
in-process broker and the web process runs the workers itself (the embedded, single-machine mode).
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.stub import StubBroker

import settings


def _make_broker(url: str) -> dramatiq.Broker:
    if not url:
        return StubBroker()
    if url.startswith(("redis://", "rediss://")):
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(url=url)
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    # With confirms a publish returns only once RabbitMQ has taken the message.
    return RabbitmqBroker(url=url, confirm_delivery=settings.PUBLISH_CONFIRMS)


broker = _make_broker(settings.BROKER_URL)
dramatiq.set_broker(broker)

EMBEDDED: bool = isinstance(broker, StubBroker)
REDIS: bool = hasattr(broker, "client")  # RedisBroker; RabbitMQ otherwise, unless EMBEDDED


def ping() -> None:
    """Raise when the broker cannot be reached; the in-process broker always can."""
    if EMBEDDED:
        return
    if hasattr(broker, "client"):  # RedisBroker
        broker.client.ping()
        return
    import pika

    parameters = getattr(broker, "parameters")  # noqa: B009  (RabbitmqBroker only)
    if isinstance(parameters, list):
        parameters = parameters[0]
    pika.BlockingConnection(parameters).close()
