"""What the broker holds: message counts per queue, and the dead-lettered messages, to drop or requeue.

On RabbitMQ the counts come from passive ``queue.declare`` (no management plugin needed), the type
from declaring the queue as the service does, and the dead letters are read with ``basic.get``:
messages taken and not acknowledged go back to the queue when the channel closes. The in-process
broker answers from memory; on Redis, counts are left to the official dramatiq-dashboard.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dramatiq
import pika
import pika.exceptions
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name, xq_name

from actors.rabbitmq import RabbitmqBroker

# No more dead letters than this are looked at by one action, so it holds a bounded number unacked.
SCAN_LIMIT = 10_000


@dataclass(frozen=True)
class QueueStats:
    """Messages of a queue; None where the broker cannot say."""

    name: str
    ready: int | None
    delayed: int | None
    dead: int | None
    consumers: int | None
    # On RabbitMQ, the type the service declares the queue with; "not <type>" when RabbitMQ holds
    # the queue declared otherwise (the workers then refuse to start).
    type: str | None = None


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    actor_name: str
    notification_ids: tuple[str, ...]
    retries: int
    error: str | None


def stats(broker: dramatiq.Broker, names: list[str]) -> list[QueueStats]:
    if isinstance(broker, StubBroker):
        return [_stub_stats(broker, name) for name in names]
    if _is_rabbitmq(broker):
        with _connection(broker) as connection:
            return [_rabbit_stats(connection, broker, name) for name in names]
    return [QueueStats(name, None, None, None, None) for name in names]


def dead_letters(broker: dramatiq.Broker, name: str, limit: int = 50) -> list[DeadLetter]:
    """The first ``limit`` dead-lettered messages of a queue, left where they are."""
    if isinstance(broker, StubBroker):
        return [_dead_letter(m) for m in broker.dead_letters_by_queue[name][:limit]]
    if not _is_rabbitmq(broker):
        return []
    found: list[DeadLetter] = []
    with _channel(broker) as channel, _unless_undeclared():
        for _ in range(limit):
            _method, _properties, body = channel.basic_get(xq_name(name), auto_ack=False)
            if body is None:
                break
            found.append(_dead_letter(dramatiq.Message.decode(body)))
    return found  # closing the channel returned them all


def drop_dead(broker: dramatiq.Broker, name: str, message_id: str | None = None) -> int:
    """Delete one dead-lettered message, or all of them; return how many went."""
    return _take_dead(broker, name, message_id, requeue=False)


def requeue_dead(broker: dramatiq.Broker, name: str, message_id: str | None = None) -> int:
    """Put one dead-lettered message, or all of them, back on its queue with a fresh retry budget."""
    return _take_dead(broker, name, message_id, requeue=True)


def _take_dead(broker: dramatiq.Broker, name: str, message_id: str | None, *, requeue: bool) -> int:
    if isinstance(broker, StubBroker):
        letters = broker.dead_letters_by_queue[name]
        taken = [m for m in letters if message_id in (None, m.message_id)]
        for message in taken:
            letters.remove(message)
            if requeue:
                broker.enqueue(_fresh(message))
        return len(taken)
    if not _is_rabbitmq(broker):
        return 0
    count = 0
    with _channel(broker) as channel, _unless_undeclared():
        if message_id is None and not requeue:
            return int(channel.queue_purge(xq_name(name)).method.message_count)
        channel.confirm_delivery()
        for _ in range(SCAN_LIMIT):
            method, _properties, body = channel.basic_get(xq_name(name), auto_ack=False)
            if body is None:
                break
            letter = dramatiq.Message.decode(body)
            if message_id not in (None, letter.message_id):
                continue  # left unacknowledged: back in the queue when the channel closes
            if requeue:
                channel.basic_publish(
                    "", name, _fresh(letter).encode(), pika.BasicProperties(delivery_mode=2), mandatory=True
                )
            channel.basic_ack(method.delivery_tag)
            count += 1
            if message_id is not None:
                break
    return count


def _fresh(message: Any) -> dramatiq.Message:
    """The message as first sent: due now, on its own queue, with its retries forgotten."""
    options = {k: v for k, v in message.options.items() if k not in ("eta", "retries", "traceback")}
    return dramatiq.Message(
        queue_name=message.queue_name.removesuffix(".DQ"),
        actor_name=message.actor_name,
        args=tuple(message.args),
        kwargs=dict(message.kwargs),
        options=options,
        message_id=message.message_id,
        message_timestamp=message.message_timestamp,
    )


def _dead_letter(message: Any) -> DeadLetter:
    trace = message.options.get("traceback")
    return DeadLetter(
        message_id=message.message_id,
        actor_name=message.actor_name,
        notification_ids=tuple(message.args[0]) if message.args and isinstance(message.args[0], dict) else (),
        retries=int(message.options.get("retries", 0)),
        error=trace.strip().splitlines()[-1] if trace else None,
    )


def _stub_stats(stub: StubBroker, name: str) -> QueueStats:
    def size(queue: str) -> int | None:
        return stub.queues[queue].qsize() if queue in stub.queues else None

    return QueueStats(name, size(name), size(dq_name(name)), len(stub.dead_letters_by_queue[name]), None)


def _rabbit_stats(connection: Any, broker: dramatiq.Broker, name: str) -> QueueStats:
    counts = {}
    channel = connection.channel()
    for queue in (name, dq_name(name), xq_name(name)):
        try:
            declared = channel.queue_declare(queue, passive=True).method
            counts[queue] = (declared.message_count, declared.consumer_count)
        except pika.exceptions.ChannelClosedByBroker:  # 404: no worker or publisher declared it yet
            channel = connection.channel()
    queue_type = broker.queue_type if isinstance(broker, RabbitmqBroker) else None
    if isinstance(broker, RabbitmqBroker) and name in counts:
        # A passive declare says nothing of the type; declaring the queue as the service does
        # is a no-op when RabbitMQ holds it so, PRECONDITION_FAILED when it holds it otherwise.
        try:
            channel.queue_declare(name, durable=True, arguments=broker.queue_arguments(name))
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 406:
                raise
            queue_type = f"not {queue_type}"
            channel = connection.channel()
    if channel.is_open:
        channel.close()
    # Each worker consumes from the queue and its delay queue; the queue's count is the workers'.
    return QueueStats(
        name,
        ready=counts.get(name, (0, 0))[0],
        delayed=counts.get(dq_name(name), (0, 0))[0],
        dead=counts.get(xq_name(name), (0, 0))[0],
        consumers=counts.get(name, (0, 0))[1],
        type=queue_type,
    )


def _is_rabbitmq(broker: dramatiq.Broker) -> bool:
    return hasattr(broker, "parameters")


@contextlib.contextmanager
def _connection(broker: dramatiq.Broker) -> Iterator[Any]:
    # All of a cluster's nodes, tried in turn: the first that answers.
    connection = pika.BlockingConnection(getattr(broker, "parameters"))  # noqa: B009  (RabbitmqBroker only)
    try:
        yield connection
    finally:
        connection.close()


@contextlib.contextmanager
def _unless_undeclared() -> Iterator[None]:
    """A queue nobody declared yet holds nothing: its 404 ends the block quietly."""
    try:
        yield
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 404:
            raise


@contextlib.contextmanager
def _channel(broker: dramatiq.Broker) -> Iterator[Any]:
    with _connection(broker) as connection:
        yield connection.channel()
