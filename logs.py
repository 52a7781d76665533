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
import os
import queue
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


# At most this many records wait for the writing thread; more are dropped, and counted, rather than
# hold up the thread that logs (a request's) when the stream is slow or stuck.
QUEUE_BOUND = 10_000

# A SimpleQueue rather than a Queue(maxsize): its put and get take no lock written in Python, nor
# count tasks; Enqueue keeps the bound, under its handler's lock.
Records = queue.SimpleQueue[logging.LogRecord | None]


class LineWriter(logging.StreamHandler):
    """Gathers formatted lines and writes them in as few writes as fit in ``PIPE_BUF`` bytes each."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.setFormatter(OneLineFormatter())
        self._lines: list[str] = []
        self._size = 0
        self._last: logging.LogRecord | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        size = len(line) if line.isascii() else len(line.encode("utf-8", "surrogateescape"))
        if self._lines and self._size + size > select.PIPE_BUF:
            self.flush()
        self._lines.append(line)
        self._size += size
        self._last = record

    def flush(self) -> None:
        # At most PIPE_BUF bytes a write (or one longer line), so that lines written to the same pipe
        # by other processes, gunicorn's other workers say, never cut into one of these.
        with self.lock:  # type: ignore[union-attr]
            if not self._lines:
                return
            text, record = "".join(self._lines), self._last
            self.discard()
            try:
                self.stream.write(text)
                self.stream.flush()
            except Exception:
                self.handleError(record)  # type: ignore[arg-type]

    def discard(self) -> None:
        """Forget the lines gathered and not yet written."""
        self._lines, self._size, self._last = [], 0, None


class Enqueue(logging.handlers.QueueHandler):
    """Puts each record on the queue with its context, or counts it dropped when ``bound`` are waiting.

    The count is logged, as "N log records dropped", by the first record that finds room again. Once
    the listener has stopped (at exit), records are written at once instead, by the thread logging.
    """

    def __init__(self, records: Records, bound: int) -> None:
        super().__init__(records)
        self.records, self.bound = records, bound  # self.queue, typed
        # Both below change under the handler's lock, which emit() holds.
        self.dropped = 0
        self.direct: LineWriter | None = None

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The record is not copied, as QueueHandler's prepare does: this is the root's one handler.
        _add_context(record)
        if record.args:
            # Now, while the arguments are what they were when logged.
            record.msg, record.args = record.getMessage(), None
        if record.exc_info:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
            record.exc_info = None  # keeps no traceback, and the frames it holds, alive
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        if self.direct is not None:
            self.direct.handle(record)
            self.direct.flush()
        # Counted then put under the lock: only the listener, which takes records, runs meanwhile.
        elif self.records.qsize() + (2 if self.dropped else 1) > self.bound:
            self.dropped += 1
        else:
            if self.dropped:
                self.records.put_nowait(_dropped(self.dropped))
                self.dropped = 0
            self.records.put_nowait(record)


_TRACEBACKS = logging.Formatter()


def _dropped(count: int) -> logging.LogRecord:
    record = logging.LogRecord(
        __name__, logging.WARNING, __file__, 0, "%d log records dropped", (count,), None
    )
    record.msg, record.args = record.getMessage(), None
    record.host, record.channel, record.notification = settings.HOSTNAME, "-", "-"
    return record


class Listener(logging.handlers.QueueListener):
    """The thread that writes the queued records every ``interval`` seconds, in few writes.

    It looks at the queue rather than waiting on it: a record put on a queue that a thread waits on
    wakes that thread, and a wake-up and a write for each record, two per accepted notification,
    doubled the CPU a record costs.
    """

    def __init__(self, records: Records, writer: LineWriter, interval: float = 0.05) -> None:
        super().__init__(records, writer)
        self.records, self.writer, self.interval = records, writer, interval  # self.queue, typed
        self._stopping = threading.Event()

    def dequeue(self, block: bool) -> logging.LogRecord | None:  # type: ignore[override]
        while True:
            try:
                return self.records.get_nowait()
            except queue.Empty:
                self.writer.flush()  # nothing more waiting: write what is gathered, then wait
                self._stopping.wait(self.interval)

    def start(self) -> None:
        super().start()
        if self._thread is not None:
            self._thread.name = "log-writer"

    def enqueue_sentinel(self) -> None:
        self.records.put_nowait(None)  # QueueListener's sentinel, the last record it takes
        self._stopping.set()

    def stop(self) -> None:
        """Write what is queued and end the thread; does nothing if it is not running."""
        if self._thread is None:
            return
        super().stop()
        self._stopping.clear()
        self.writer.flush()

    def restart(self, records: Records) -> None:
        """Start afresh on ``records``, after a fork: the child has a copy of the thread that never runs."""
        self.queue = self.records = records
        self._stopping = threading.Event()
        self.writer.discard()  # the parent writes the lines it had gathered
        self._thread = None
        self.start()


_active: tuple[Enqueue, Listener] | None = None


def configure(
    stream: TextIO | None = None, *, replace: bool = False, bound: int = QUEUE_BOUND
) -> Listener | None:
    """Log at ``LOG_LEVEL`` to ``stream`` (stdout), unless logging is set up already and not ``replace``.

    Records wait on a queue of at most ``bound`` for a thread of their own that formats and writes
    them: threads that log only take the context and queue the record, and never wait on the stream.
    """
    if logging.getLogger().handlers and not replace:
        return None
    stop()
    # No format here names the caller's file, line or function: skip finding them for every record
    # (the logging HOWTO's "Optimization" section).
    logging._srcfile = None  # type: ignore[attr-defined]
    global _active
    records: Records = queue.SimpleQueue()
    enqueue, listener = Enqueue(records, bound), Listener(records, LineWriter(stream or sys.stdout))
    _active = enqueue, listener
    listener.start()
    logging.basicConfig(level=settings.LOG_LEVEL, handlers=[enqueue], force=replace)
    return listener


def stop() -> None:
    """Write every queued record and end the writing thread; later records are written as logged.

    Called at exit, and by a Dramatiq worker process as it shuts down: it ends with ``os._exit``,
    which runs no ``atexit`` function.
    """
    if _active is None:
        return
    enqueue, listener = _active
    listener.stop()
    with enqueue.lock:  # type: ignore[union-attr]
        # Records queued after the thread's last one (behind its sentinel), then every later record.
        while True:
            try:
                record = listener.records.get_nowait()
            except queue.Empty:
                break
            if record is not None:
                listener.writer.handle(record)
        if enqueue.dropped:
            listener.writer.handle(_dropped(enqueue.dropped))
            enqueue.dropped = 0
        listener.writer.flush()
        enqueue.direct = listener.writer


def _after_fork_in_child() -> None:
    # gunicorn's workers (with --preload) and Dramatiq's processes are forks: each needs its own queue
    # and a running thread, not the parent's records and a copy of a thread that does not run.
    if _active is None or _active[0].direct is not None:
        return
    enqueue, listener = _active
    records: Records = queue.SimpleQueue()
    enqueue.queue = enqueue.records = records
    enqueue.dropped = 0
    listener.restart(records)


atexit.register(stop)
os.register_at_fork(after_in_child=_after_fork_in_child)
