"""Log lines: one per record with its context, queued for a writing thread, bounded, written at exit."""

from __future__ import annotations

import io
import logging
import os
import re
import select
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

import logs
import settings
from actors import broker, delivery
from actors.logcontext import LogContext
from harness.processes import ROOT, Service
from harness.waiting import wait_until

NOTIFICATION = "f47ac10b-58cc-4372-a567-0e02b2c3d479"
PREFIX = rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} \w+ host={re.escape(settings.HOSTNAME)} "


@pytest.fixture
def configure() -> Iterator[Callable[..., logs.Listener | None]]:
    """``logs.configure`` for one test: the root's handlers and level are put back after it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield lambda stream, **options: logs.configure(stream, replace=True, **options)
    logs.stop()
    root.handlers[:] = handlers
    root.setLevel(level)


class PipeReader:
    """The read end of a pipe, read by a thread of its own once started; ``stream`` is the write end."""

    def __init__(self) -> None:
        read, write = os.pipe()
        self._read = os.fdopen(read, "rb")
        self.stream = os.fdopen(write, "w", encoding="utf-8")
        self.data = bytearray()
        self._thread = threading.Thread(target=self._drain)

    def start(self) -> PipeReader:
        self._thread.start()
        return self

    def _drain(self) -> None:
        while chunk := self._read.read1(65536):
            self.data += chunk

    def lines(self) -> list[str]:
        """Every line written, once the write end is closed."""
        self.stream.close()
        self._thread.join()
        self._read.close()
        return self.data.decode().splitlines()


def test_log_lines_name_the_host_channel_and_notification_on_one_line():
    stream = io.StringIO()
    logger = logging.getLogger("tests.one-line")
    logger.addHandler(logs.handler(stream))
    logger.propagate = False
    message = delivery.deliver_email.message({NOTIFICATION: 1})
    context = LogContext()
    context.before_process_message(broker, message)
    try:
        raise ValueError("first line\nsecond line")
    except ValueError:
        logger.exception("Delivery went wrong")
    finally:
        context.after_process_message(broker, message)
    logger.warning("after")

    first, second = stream.getvalue().splitlines()
    assert f"host={settings.HOSTNAME} channel=email notification={NOTIFICATION}" in first
    assert "Delivery went wrong | Traceback" in first and "second line" in first
    assert "channel=- notification=-" in second


def test_configured_logging_writes_one_prefixed_line_per_record_from_any_thread(configure):
    stream = io.StringIO()
    configure(stream)
    logger = logging.getLogger("tests.queued")

    def log_in_context():
        with logs.context(NOTIFICATION, "push"):
            try:
                raise ValueError("first\nsecond")
            except ValueError:
                logger.exception("Went wrong")

    thread = threading.Thread(target=log_in_context)
    thread.start()
    thread.join()
    logger.warning("plain %s", "argument")
    logs.stop()  # writes what is queued, then ends the thread

    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert f"channel=push notification={NOTIFICATION} tests.queued: Went wrong | Traceback" in lines[0]
    assert "second" in lines[0]
    assert lines[1].endswith("tests.queued: plain argument")
    assert "INFO:" not in stream.getvalue()


def test_records_from_several_threads_all_appear_whole_and_in_order_per_thread(configure):
    pipe = PipeReader().start()
    configure(pipe.stream)
    threads, per_thread, padding = 8, 300, "x" * 150
    start = threading.Barrier(threads)

    def log_records(t: int) -> None:
        logger = logging.getLogger(f"tests.thread{t}")
        start.wait()
        for i in range(per_thread):
            logger.info("record %d %s", i, padding)

    workers = [threading.Thread(target=log_records, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    logs.stop()

    line = re.compile(rf"^{PREFIX}channel=- notification=- tests\.thread(\d): record (\d+) {padding}$")
    seen: dict[int, list[int]] = {t: [] for t in range(threads)}
    for text in pipe.lines():
        match = line.match(text)
        assert match, text
        seen[int(match[1])].append(int(match[2]))
    assert seen == {t: list(range(per_thread)) for t in range(threads)}


class StalledStream(io.StringIO):
    """A stream whose writes wait until ``release`` is set; ``writing`` is set once one waits."""

    def __init__(self) -> None:
        super().__init__()
        self.writing, self.release = threading.Event(), threading.Event()

    def write(self, text: str) -> int:
        self.writing.set()
        self.release.wait()
        return super().write(text)


def test_a_full_queue_drops_records_and_reports_how_many_once_there_is_room(configure):
    stream = StalledStream()
    configure(stream, bound=5)
    logger = logging.getLogger("tests.full")
    logger.info("first")
    assert stream.writing.wait(10)  # the writing thread waits on the stream; the queue is empty
    for i in range(8):
        logger.info("record %d", i)  # five fill the queue; three are dropped
    stream.release.set()
    wait_until(lambda: "record 4" in stream.getvalue())
    logger.info("after")
    logs.stop()

    messages = [line.split(": ", 1)[1] for line in stream.getvalue().splitlines()]
    assert messages == ["first", *(f"record {i}" for i in range(5)), "3 log records dropped", "after"]


def test_logging_returns_while_the_stream_is_stuck(configure):
    pipe = PipeReader()  # not read yet: once its buffer is full, every write waits
    configure(pipe.stream)
    logger = logging.getLogger("tests.stuck")
    logged = 3 * logs.QUEUE_BOUND
    for i in range(logged):
        logger.info("record %d %s", i, "x" * 150)  # about 6 MB, beyond the pipe's and the queue's room
    pipe.start()
    logs.stop()  # writes what is queued, and the count of what was not

    lines = pipe.lines()
    written = [line for line in lines if "tests.stuck: record " in line]
    dropped = [int(m[1]) for line in lines if (m := re.search(r"logs: (\d+) log records dropped$", line))]
    assert dropped and len(written) + sum(dropped) == logged


def run_python(code: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "LOG_LEVEL": "INFO"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stderr == ""
    return done.stdout.splitlines()


def test_records_logged_just_before_exit_are_written():
    lines = run_python(
        "import atexit, logging\n"
        "logger = logging.getLogger('tests.exit')\n"
        # Registered before logs is imported, so run after its writing thread has stopped.
        "atexit.register(lambda: logger.info('at exit'))\n"
        "import logs\n"
        "logs.configure()\n"
        "for i in range(2000):\n"
        "    logger.info('record %d', i)\n"
    )
    assert [line.split(": ", 1)[1] for line in lines] == [f"record {i}" for i in range(2000)] + ["at exit"]


def test_a_forked_process_writes_its_own_records_with_a_thread_of_its_own():
    # What gunicorn --preload and Dramatiq's worker processes do: fork after logging is set up.
    lines = run_python(
        "import logging, multiprocessing\n"
        "import logs\n"
        "logs.configure()\n"
        "logger = logging.getLogger('tests.fork')\n"
        "def child():\n"
        "    for i in range(100):\n"
        "        logger.info('child %d', i)\n"
        "    logs.stop()  # as a Dramatiq worker process does at shutdown: it ends with os._exit\n"
        "logger.info('parent before')  # still queued at the fork, most likely\n"
        "process = multiprocessing.get_context('fork').Process(target=child)\n"
        "process.start()\n"
        "process.join()\n"
        "logger.info('parent after')\n"
    )
    messages = [line.split(": ", 1)[1] for line in lines]
    assert [m for m in messages if m.startswith("child")] == [f"child {i}" for i in range(100)]
    assert [m for m in messages if m.startswith("parent")] == ["parent before", "parent after"]


def test_worker_shutdown_writes_the_queued_records(configure):
    stream = io.StringIO()
    configure(stream)
    logging.getLogger("tests.shutdown").info("last words")
    LogContext().after_worker_shutdown(broker, None)  # type: ignore[arg-type]
    assert stream.getvalue().endswith("tests.shutdown: last words\n")


def test_lines_are_written_whole_a_pipe_buffer_at_most_at_a_time():
    class Recording(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.writes: list[str] = []

        def write(self, text: str) -> int:
            self.writes.append(text)
            return super().write(text)

    stream = Recording()
    writer = logs.LineWriter(stream)
    long_line = "y" * (select.PIPE_BUF + 10)
    messages = [f"record {i} " + "x" * 200 for i in range(60)] + [long_line, "last"]
    for i, message in enumerate(messages):
        record = logging.makeLogRecord({"msg": message, "name": f"tests.n{i}"})
        writer.handle(record)
    writer.flush()
    lines = stream.getvalue().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == messages
    assert len(stream.writes) > 2 and all(w.endswith("\n") for w in stream.writes)
    assert all(len(w.encode()) <= select.PIPE_BUF or w.count("\n") == 1 for w in stream.writes)


def test_access_lines_are_the_combined_format_with_the_common_prefix(tmp_path):
    import http.client

    service = Service(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path}/access.db", BROKER_URL="")
    try:
        port = int(service.start_api().rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(
            "POST",
            "/notifications/push?via=test",
            body=b'{"recipient_id": "r1", "content": "hi"}',
            headers={"Content-Type": "application/json", "User-Agent": 'agent "7"', "Referer": "http://x/"},
        )
        assert conn.getresponse().status == 202
        conn.close()

        def access_line():
            lines = [line for line in service.logs().splitlines() if "POST /notifications/push" in line]
            return lines[0] if lines else None

        line = wait_until(access_line, timeout=10)
    finally:
        service.close()
    combined = (
        r"channel=- notification=- gunicorn\.access: 127\.0\.0\.1 - - "
        r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "
        r'"POST /notifications/push\?via=test HTTP/1\.1" 202 \d+ "http://x/" "agent \\"7\\""$'
    )
    assert re.match("^" + PREFIX.replace(r"\w+", "INFO") + combined, line), line
