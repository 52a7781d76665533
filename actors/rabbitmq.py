"""Dramatiq's RabbitMQ broker for one node or a cluster: the queues' type, and every node's URL.

Dramatiq already takes a list of URLs: each (re)connection, by publishers and consumers alike, goes
to the first node of the list that answers, so a stopped node costs a reconnection, not a restart.
With ``quorum`` the queues are replicated on the cluster's nodes, and a publish confirmed by
RabbitMQ is held by a majority of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import dramatiq
import pika
import pika.exceptions
from dramatiq.brokers import rabbitmq
from dramatiq.common import dq_name, xq_name

QUEUE_TYPES = ("classic", "quorum")

# A quorum queue dead-letters a message once it has come back to the queue this many times. Here a
# message comes back only when the connection of the worker holding it unacknowledged goes away (its
# node stopped, the worker restarted, the network cut): Dramatiq rejects a failed message without
# requeueing, which dead-letters it at once, uncounted. A delayed (.DQ) message is held until its
# ETA: at most SCHEDULE_HORIZON, or RETRY_MAX_DELAY for a retry, minutes. RabbitMQ 4's default of 20
# could be spent by workers crash-looping for those minutes and would park deliverable
# notifications; a thousand losses of a message's holder within minutes are out of reach.
# Poison notifications need no broker limit: a delivery that kills its worker leaves the row
# Processing, so a redelivered message skips it, and the database fails a row whose attempts keep
# dying. Were the limit reached all the same, the notification would be late, not lost: its row
# keeps the message's DISPATCH_LEASE, after which the scheduler sends it again. The .XQ gets the
# limit too (RabbitMQ 4 would give it 20): the dashboard reads dead letters unacknowledged, each look
# counts, and past the limit they would be dropped. The limit is part of a queue's declaration:
# another value needs the same migration as another type (README).
DELIVERY_LIMIT = 1000


class QueueMismatch(dramatiq.errors.BrokerError):
    """RabbitMQ holds a queue of this name declared otherwise, of another type for one."""


class RabbitmqBroker(rabbitmq.RabbitmqBroker):
    """Dramatiq's broker on the first of ``urls`` that answers, declaring queues of ``queue_type``."""

    def __init__(self, urls: Sequence[str], *, queue_type: str = "classic", **options: Any) -> None:
        if queue_type not in QUEUE_TYPES:
            raise ValueError(f"queue_type must be one of {QUEUE_TYPES}, got {queue_type!r}")
        # A list even of one URL: pika tries each in turn, in order, at every connection.
        super().__init__(url=list(urls), **options)
        self.queue_type = queue_type

    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        """Dramatiq's arguments (dead-lettering to the .XQ) and the type: for a queue and its .DQ."""
        return {**super()._build_queue_arguments(queue_name), **self._type_arguments()}

    def queue_arguments(self, queue_name: str) -> dict[str, Any]:
        """What the service declares a queue and its .DQ with."""
        return self._build_queue_arguments(queue_name)

    def dead_letter_arguments(self) -> dict[str, Any]:
        """The .XQ's: Dramatiq's week-long TTL (quorum queues honour it too) and the type."""
        return {"x-message-ttl": rabbitmq.DEAD_MESSAGE_TTL, **self._type_arguments()}

    def _type_arguments(self) -> dict[str, Any]:
        if self.queue_type == "classic":
            return {}  # as Dramatiq declares them, so queues made before this setting are the same
        return {"x-queue-type": "quorum", "x-delivery-limit": DELIVERY_LIMIT}

    def _declare_queue(self, queue_name: str) -> Any:
        with self._declaring(queue_name):
            return super()._declare_queue(queue_name)

    def _declare_dq_queue(self, queue_name: str) -> Any:
        with self._declaring(dq_name(queue_name)):
            return super()._declare_dq_queue(queue_name)

    def _declare_xq_queue(self, queue_name: str) -> Any:
        # Dramatiq builds the .XQ's arguments inline, without _build_queue_arguments.
        with self._declaring(xq_name(queue_name)):
            return self.channel.queue_declare(
                queue=xq_name(queue_name), durable=True, arguments=self.dead_letter_arguments()
            )

    @contextlib.contextmanager
    def _declaring(self, name: str) -> Iterator[None]:
        """RabbitMQ's PRECONDITION_FAILED for an existing queue as an error that says what to do."""
        try:
            yield
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 406:
                raise
            del self.channel  # closed by RabbitMQ with the error
            raise QueueMismatch(
                f"RabbitMQ refused to declare queue {name!r} as RABBITMQ_QUEUE_TYPE={self.queue_type}"
                f" wants: it exists, declared otherwise ({exc.reply_text}). A queue keeps the type"
                " it was created with; see 'Changing the queue type' in the README."
            ) from None

    def declare_queues(self) -> None:
        """Declare the actors' queues now, so that a queue declared otherwise stops start-up."""
        try:
            for name in sorted(self.get_declared_queues()):
                self.declare_queue(name, ensure=True)
        finally:
            # This thread publishes nothing: no idle connection left to miss its heartbeats.
            del self.connection

    def ping(self) -> None:
        """Raise unless one of the nodes answers."""
        pika.BlockingConnection(self.parameters).close()
