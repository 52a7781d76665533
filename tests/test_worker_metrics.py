"""Worker processes: heartbeats, delivery metrics counted once, Prometheus ports per channel."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import time
import urllib.request

import dramatiq
import pytest

from actors import broker, delivery
from actors.heartbeat import Heartbeat
from actors.metrics import DeliveryMetrics
from storage import dispatching, workers
from storage import notifications as store
from storage.clock import utcnow
from tests.factories import make
from tests.test_metrics import await_http, free_port, sample


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


def message_for(dispatch: dispatching.Dispatch) -> dramatiq.Message:
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
    store.Notification.update(due_at=utcnow() - dt.timedelta(seconds=30)).where(
        store.Notification.id == n.id
    ).execute()
    (dispatch,) = dispatching.take_due(horizon=60, lease=600, limit=10)
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
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = sample(fetch(url), name, **labels)
            if value is not None:
                return value
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}{labels} never appeared at {url}")
        time.sleep(0.1)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def run_workers(tmp_path, rabbitmq_url, **env: str) -> subprocess.Popen:
    with (tmp_path / "workers.log").open("w") as log:
        return subprocess.Popen(
            ["./run_workers.sh"],
            env={
                **os.environ,
                "PATH": f"{os.path.dirname(os.path.abspath(os.sys.executable))}:{os.environ['PATH']}",
                "BROKER_URL": rabbitmq_url,
                "DATABASE_URL": f"sqlite:///{tmp_path}/workers.db",
                "TMPDIR": str(tmp_path),
                "WORKER_HEARTBEAT_INTERVAL": "0.2",
                "WORKER_THREADS": "2",
                **env,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(30)


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
        assert sample(fetch(push), "dramatiq_messages_total") == 1
        # The email workers answer on their own port, with none of the push workers' counts.
        await_http(f"http://127.0.0.1:{email_port}/")
        email = fetch(f"http://127.0.0.1:{email_port}/")
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
        deadline = time.monotonic() + 30
        while len(workers.hosts()) < 2:  # both channels' workers are up and beating
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.1)
        assert not listening(push_port) and not listening(email_port)
    finally:
        stop(workers_process)
        storage.db.close()
