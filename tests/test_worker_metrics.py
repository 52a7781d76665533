"""Worker processes: heartbeats, delivery metrics counted once, Prometheus ports per channel."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess

import dramatiq
import pytest

from actors import broker, delivery
from actors.heartbeat import Heartbeat
from actors.metrics import DeliveryMetrics
from actors.providers import provider_for
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


def test_delivery_metrics_count_every_notification_of_a_message_once(db):
    for recipient in ("r1", "r2", "r3"):
        make(recipient_id=recipient)
    taken = schedule.take_due(horizon=60, lease=600, limit=10)
    message = delivery.ACTORS["push"].message({d.notification_id: d.seq for d in taken})
    metrics = DeliveryMetrics()

    handle([metrics], message)
    handle([metrics], message)  # a duplicate of the same message does nothing

    fallback = provider_for("push").name
    assert metrics.metrics.delivered.labels("push")._value.get() == 3
    assert sum(bucket.get() for bucket in metrics.metrics.lateness.labels("push")._buckets) == 3
    assert metrics.metrics.device_deliveries.labels(fallback, "delivered")._value.get() == 3


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
