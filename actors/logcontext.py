"""Names the notification and channel on every log line written while a worker handles its message."""

from __future__ import annotations

import contextvars
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy

import logs


class LogContext(dramatiq.Middleware):
    """Binds ``notification=<id> channel=<queue>`` for each message; writes what is queued at shutdown."""

    def __init__(self) -> None:
        # Keyed by message id: the before and after callbacks of one message run on the same thread.
        self._tokens: dict[str, tuple[contextvars.Token[str], contextvars.Token[str]]] = {}

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        # A message for one notification names it; the delivery code names each one of a batch.
        seqs = message.args[0] if message.args and isinstance(message.args[0], dict) else {}
        notification_id = next(iter(seqs)) if len(seqs) == 1 else "-"
        self._tokens[message.message_id] = logs.bind(notification_id, message.queue_name)

    def after_process_message(
        self, broker: dramatiq.Broker, message: MessageProxy, *, result: Any = None, exception: Any = None
    ) -> None:
        tokens = self._tokens.pop(message.message_id, None)
        if tokens is not None:
            logs.unbind(tokens)

    after_skip_message = after_process_message

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # A Dramatiq worker process ends with os._exit, which runs no atexit function: write the
        # records still queued now.
        logs.stop()
