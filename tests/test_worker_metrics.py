"""Worker processes: heartbeats, delivery metrics counted once, Prometheus ports per channel."""

from __future__ import annotations

import datetime as dt
import io
import logging
import socket
import subprocess

import dramatiq
import pytest

from actors import broker, delivery
from actors.heartbeat import Heartbeat
from actors.metrics import DeliveryMetrics
from harness.factories import make
from harness.network import answers, free_port
from harness.processes import Service, stop
from harness.prometheus import sample, scrape
from harness.waiting import wait_until
from storage import models, schedule, workers
from storage.clock import utcnow


def test_heartbeats_sum_processes_per_host_and_forget_silent_ones(db):
    started = utcnow()
    workers.beat(host="w1", pid=1, queues="push", in_flight=2, started_at=started)
    workers.beat(host="w1", pid=2, queues="push", in_flight=1, started_at=started)
    workers.beat(host="w1", pid=2, queues="push", in_flight=3, started_at=started)
    workers.beat(host="w2", pid=1, queues="email", in_flight=0, started_at=started)
    hosts = {w.host: w for w in workers.hosts()}
    assert (hosts["w1"].processes, hosts["w1"].in_flight, hosts["w1"].queues) == (2, 5, "push")
    assert hosts["w2"].in_flight == 0
    assert hosts["w1"].last_seen >= started

    workers.leave(host="w2", pid=1)
    assert workers.forget_silent(dt.timedelta(seconds=-1)) == 2
    assert workers.hosts() == []


def message_for(dispatch: schedule.Publication) -> dramatiq.Message:
    return delivery.ACTORS[dispatch.channel].message({dispatch.notification_id: dispatch.seq})


def handle(middleware: list[dramatiq.Middleware], message: dramatiq.Message) -> None:
    """What a worker does with a message, minus the broker: the middleware around the actor."""
    for m in middleware:
        m.before_process_message(broker, message)
    try:
        delivery.deliver(*message.args)
    finally:
        for m in reversed(middleware):
            m.after_process_message(broker, message)


def test_delivery_metrics_count_a_notification_once_with_its_lateness(db):
    n = make()
    models.Notification.update(due_at=utcnow() - dt.timedelta(seconds=30)).where(
        models.Notification.id == n.id
    ).execute()
    (dispatch,) = schedule.take_due(horizon=60, lease=600, limit=10)
    metrics, heartbeat = DeliveryMetrics(), Heartbeat()
    message = message_for(dispatch)

    handle([heartbeat, metrics], message)
    handle([heartbeat, metrics], message)  # a duplicate of the same message does nothing

    delivered = metrics.metrics.delivered.labels("push")._value.get()
    lateness = metrics.metrics.lateness.labels("push")
    assert delivered == 1
    assert lateness._sum.get() >= 30
    assert metrics.metrics.failed.labels("push")._value.get() == 0
    assert heartbeat.in_flight == 0


def await_value(url: str, name: str, timeout: float = 30, **labels: str) -> float:
    def found() -> tuple[float] | None:
        try:
            value = sample(scrape(url), name, **labels)
        except OSError:
            return None
        return None if value is None else (value,)  # a tuple: a value of 0 is found too

    return wait_until(found, timeout, interval=0.1, what=f"{name}{labels} at {url}")[0]


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def run_workers(tmp_path, rabbitmq_url, **env: str) -> subprocess.Popen:
    """run_workers.sh for both channels, with their metrics on unless ``env`` says otherwise; logs in
    ``tmp_path / "workers.log"``."""
    service = Service(
        tmp_path,
        BROKER_URL=rabbitmq_url,
        DATABASE_URL=f"sqlite:///{tmp_path}/workers.db",
        WORKER_HEARTBEAT_INTERVAL="0.2",
        WORKER_THREADS="2",
        **{"METRICS_ENABLED": "true", **env},
    )
    return service.start_workers()


@pytest.mark.rabbitmq
def test_each_channel_serves_its_metrics_on_its_port(tmp_path, rabbitmq_url):
    import storage

    push_port, email_port = free_port(), free_port()
    workers_process = run_workers(
        tmp_path, rabbitmq_url, PUSH_METRICS_PORT=str(push_port), EMAIL_METRICS_PORT=str(email_port)
    )
    try:
        storage.configure(f"sqlite:///{tmp_path}/workers.db")
        make()
        push = f"http://127.0.0.1:{push_port}/"
        assert await_value(push, "notifications_delivered_total", channel="push") == 1
        assert sample(scrape(push), "dramatiq_messages_total") == 1
        # The email workers answer on their own port, with none of the push workers' counts.
        wait_until(lambda: answers(f"http://127.0.0.1:{email_port}/"))
        email = scrape(f"http://127.0.0.1:{email_port}/")
        assert sample(email, "notifications_delivered_total", channel="push") is None
        assert {w.queues for w in workers.hosts()} == {"push", "email"}
    finally:
        stop(workers_process)
        storage.db.close()
    log = (tmp_path / "workers.log").read_text()
    assert "channel=push notification=" in log and "Delivered" in log


@pytest.mark.rabbitmq
def test_metrics_disabled_opens_no_port(tmp_path, rabbitmq_url):
    import storage

    push_port, email_port = free_port(), free_port()
    workers_process = run_workers(
        tmp_path,
        rabbitmq_url,
        METRICS_ENABLED="false",
        PUSH_METRICS_PORT=str(push_port),
        EMAIL_METRICS_PORT=str(email_port),
    )
    try:
        storage.configure(f"sqlite:///{tmp_path}/workers.db")
        # Both channels' workers are up and beating.
        wait_until(lambda: len(workers.hosts()) >= 2, timeout=30, interval=0.1, what="both channels' workers")
        assert not listening(push_port) and not listening(email_port)
    finally:
        stop(workers_process)
        storage.db.close()


def test_configured_logging_writes_one_prefixed_line_per_record_from_any_thread():
    import threading

    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        listener = logs.configure(stream, replace=True)
        logger = logging.getLogger("tests.queued")

        def log_in_context():
            with logs.context("f47ac10b-58cc-4372-a567-0e02b2c3d479", "push"):
                try:
                    raise ValueError("first\nsecond")
                except ValueError:
                    logger.exception("Went wrong")

        thread = threading.Thread(target=log_in_context)
        thread.start()
        thread.join()
        logger.warning("plain %s", "argument")
        listener.stop()  # writes what is queued, then ends its thread
        atexit.unregister(listener.stop)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    context = "channel=push notification=f47ac10b-58cc-4372-a567-0e02b2c3d479"
    assert f"{context} tests.queued: Went wrong | Traceback" in lines[0]
    assert "second" in lines[0]
    assert lines[1].endswith("tests.queued: plain argument")
    assert "INFO:" not in stream.getvalue()


def test_pending_lines_are_written_whole_a_pipe_buffer_at_most_at_a_time():
    import select

    class Recording(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.writes: list[str] = []

        def write(self, text: str) -> int:
            self.writes.append(text)
            return super().write(text)

    stream = Recording()
    writer = logs.Writer(logs.Pending(), logs.handler(stream))
    long_line = "y" * (select.PIPE_BUF + 10)
    for i, message in enumerate([f"record {i} " + "x" * 200 for i in range(60)] + [long_line, "last"]):
        writer.pending.put_nowait(logging.makeLogRecord({"msg": message, "name": f"tests.n{i}"}))
    writer.stop()  # never started: writes what is pending
    lines = stream.getvalue().splitlines()
    assert [line.split(": ", 1)[1] for line in lines[:2]] == [f"record {i} " + "x" * 200 for i in range(2)]
    assert len(lines) == 62 and lines[-2].endswith(long_line) and lines[-1].endswith("last")
    assert len(stream.writes) > 2 and all(w.endswith("\n") for w in stream.writes)
    assert all(len(w.encode()) <= select.PIPE_BUF or w.count("\n") == 1 for w in stream.writes)


def test_access_lines_are_the_combined_format_with_the_common_prefix(tmp_path):
    import http.client
    import re

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
    prefix = rf"^\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} INFO host={re.escape(settings.HOSTNAME)} "
    combined = (
        r"channel=- notification=- gunicorn\.access: 127\.0\.0\.1 - - "
        r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "
        r'"POST /notifications/push\?via=test HTTP/1\.1" 202 \d+ "http://x/" "agent \\"7\\""$'
    )
    assert re.match(prefix + combined, line), line
