"""Log set-up shared by the web and worker processes: one line per event, on stdout, with its context.

Every line names the host, and while a worker handles a message, the notification and its channel,
so that ``grep notification=<id>`` follows one notification through every process.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import logging
import logging.handlers
import queue
import sys
from collections.abc import Iterator
from typing import TextIO

import settings

_notification: contextvars.ContextVar[str] = contextvars.ContextVar("notification", default="-")
_channel: contextvars.ContextVar[str] = contextvars.ContextVar("channel", default="-")

FORMAT = (
    "%(asctime)s %(levelname)s host=%(host)s channel=%(channel)s notification=%(notification)s "
    "%(name)s: %(message)s"
)


class ContextFilter(logging.Filter):
    """Adds the host and the notification being handled to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        # A record handed over from another thread already carries the context of its own.
        if not hasattr(record, "host"):
            record.host = settings.HOSTNAME
            record.notification = _notification.get()
            record.channel = _channel.get()
        return True


class OneLineFormatter(logging.Formatter):
    """Folds tracebacks and multi-line messages into the event's one line."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "").replace("\n", " | ")


@contextlib.contextmanager
def context(notification_id: str, channel: str) -> Iterator[None]:
    """Name the notification and channel on the lines logged inside the block."""
    tokens = _notification.set(notification_id), _channel.set(channel)
    try:
        yield
    finally:
        _notification.reset(tokens[0])
        _channel.reset(tokens[1])


def bind(notification_id: str, channel: str) -> tuple[contextvars.Token[str], contextvars.Token[str]]:
    """Like ``context``, for callers that start and end in different callbacks (middleware)."""
    return _notification.set(notification_id), _channel.set(channel)


def unbind(tokens: tuple[contextvars.Token[str], contextvars.Token[str]]) -> None:
    _notification.reset(tokens[0])
    _channel.reset(tokens[1])


def handler(stream: TextIO) -> logging.Handler:
    """A handler writing one line per record, with its context, to ``stream``."""
    one_line = logging.StreamHandler(stream)
    one_line.setFormatter(OneLineFormatter(FORMAT))
    one_line.addFilter(ContextFilter())
    return one_line


def configure(
    stream: TextIO | None = None, *, replace: bool = False
) -> logging.handlers.QueueListener | None:
    """Log at ``LOG_LEVEL`` to ``stream`` (stdout), unless logging is set up already and not ``replace``.

    Records are formatted and written by a thread of their own: threads that log only take the
    context and queue the record, instead of queueing on the stream's lock while it writes.
    """
    if logging.getLogger().handlers and not replace:
        return None
    # No format here names the caller's file, line or function: skip finding them for every record
    # (the logging HOWTO's "Optimization" section).
    logging._srcfile = None  # type: ignore[attr-defined]
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    enqueue = logging.handlers.QueueHandler(records)
    enqueue.addFilter(ContextFilter())
    # The message with any traceback, merged here; the writing thread adds the line's prefix.
    enqueue.setFormatter(logging.Formatter("%(message)s"))
    listener = logging.handlers.QueueListener(records, handler(stream or sys.stdout))
    listener.start()
    atexit.register(listener.stop)
    logging.basicConfig(level=settings.LOG_LEVEL, handlers=[enqueue], force=replace)
    return listener
