"""Log set-up shared by the web and worker processes: one line per event, on stdout, with its context.

Every line names the host, and while a worker handles a message, the notification and its channel,
so that ``grep notification=<id>`` follows one notification through every process.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import contextvars
import logging
import select
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

import settings

_notification: contextvars.ContextVar[str] = contextvars.ContextVar("notification", default="-")
_channel: contextvars.ContextVar[str] = contextvars.ContextVar("channel", default="-")

# What every line says, in this order (written out in OneLineFormatter.format).
FORMAT = (
    "%(asctime)s %(levelname)s host=%(host)s channel=%(channel)s notification=%(notification)s "
    "%(name)s: %(message)s"
)


def _add_context(record: logging.LogRecord) -> None:
    # A record handed over from another thread already carries the context of its own.
    if not hasattr(record, "host"):
        record.host = settings.HOSTNAME
        record.notification = _notification.get()
        record.channel = _channel.get()


class ContextFilter(logging.Filter):
    """Adds the host and the notification being handled to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        _add_context(record)
        return True


class OneLineFormatter(logging.Formatter):
    """Writes FORMAT, folding tracebacks and multi-line messages into the event's one line.

    The line is put together directly rather than through ``%``-style formatting of a dict: busy
    workers write one per notification.
    """

    def __init__(self) -> None:
        super().__init__(FORMAT)
        self._second: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            message = f"{message}\n{record.exc_text}"
        if record.stack_info:
            message = f"{message}\n{self.formatStack(record.stack_info)}"
        context = record.__dict__
        line = (
            f"{self.formatTime(record)} {record.levelname} host={context.get('host', '-')} "
            f"channel={context.get('channel', '-')} notification={context.get('notification', '-')} "
            f"{record.name}: {message}"
        )
        if "\n" in line or "\r" in line:
            line = line.replace("\r", "").replace("\n", " | ")
        return line

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # The date and time are formatted once per second, not once per line: busy workers log many.
        second, text = self._second
        if second != int(record.created):
            second = int(record.created)
            text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(record.created))
            self._second = (second, text)
        return f"{text},{int(record.msecs):03d}"


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


def handler(stream: TextIO) -> logging.StreamHandler:
    """A handler writing one line per record, with its context, to ``stream``."""
    one_line = logging.StreamHandler(stream)
    one_line.setFormatter(OneLineFormatter())
    one_line.addFilter(ContextFilter())
    return one_line


class Pending:
    """Records waiting for the writer: appended without waking it, as a queue's put would each time."""

    def __init__(self) -> None:
        self.records: collections.deque[logging.LogRecord] = collections.deque()
        self.put_nowait = self.records.append


class Enqueue(logging.Handler):
    """Leaves each record to the writer, with its context and its message merged with its arguments.

    Unlike ``QueueHandler`` it takes no lock (a deque's append needs none) and does not copy the
    record: this is the root's one handler, the last to see a record.
    """

    def __init__(self, pending: Pending) -> None:
        super().__init__()
        self._append = pending.put_nowait

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        _add_context(record)
        if record.args:
            # Now, while the arguments are what they were when logged.
            record.msg, record.args = record.getMessage(), None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None  # keeps no traceback, and the frames it holds, alive
        self._append(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)


class Writer:
    """A thread that writes the pending records every ``interval`` seconds, in one write.

    The API logs two lines per accepted notification; waking a thread and writing once per record
    cost as much CPU as a sixth of the request.
    """

    def __init__(self, pending: Pending, target: logging.StreamHandler, interval: float = 0.05) -> None:
        self.pending, self.target, self.interval = pending, target, interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            self.write_pending()

    def write_pending(self) -> None:
        chunk: list[str] = []
        size = 0
        records = self.pending.records
        while records:
            record = records.popleft()
            if not self.target.filter(record):
                continue
            line = self.target.format(record) + "\n"
            length = len(line.encode("utf-8", "surrogateescape"))
            if chunk and size + length > select.PIPE_BUF:
                self._write(chunk, record)
                chunk, size = [], 0
            chunk.append(line)
            size += length
        if chunk:
            self._write(chunk, record)

    def _write(self, lines: list[str], record: logging.LogRecord) -> None:
        # At most PIPE_BUF bytes a write (or one longer line), so that lines written to the same pipe
        # by other processes, gunicorn's other workers say, never cut into one of these.
        try:
            self.target.stream.write("".join(lines))
            self.target.flush()
        except Exception:
            self.target.handleError(record)

    def stop(self) -> None:
        """Write what is pending and end the thread."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        self.write_pending()


def configure(stream: TextIO | None = None, *, replace: bool = False) -> Writer | None:
    """Log at ``LOG_LEVEL`` to ``stream`` (stdout), unless logging is set up already and not ``replace``.

    Records are formatted and written by a thread of their own: threads that log only take the
    context and leave the record, instead of queueing on the stream's lock while it writes.
    """
    if logging.getLogger().handlers and not replace:
        return None
    # No format here names the caller's file, line or function: skip finding them for every record
    # (the logging HOWTO's "Optimization" section).
    logging._srcfile = None  # type: ignore[attr-defined]
    pending = Pending()
    enqueue = Enqueue(pending)
    writer = Writer(pending, handler(stream or sys.stdout))
    writer.start()
    atexit.register(writer.stop)
    logging.basicConfig(level=settings.LOG_LEVEL, handlers=[enqueue], force=replace)
    return writer
