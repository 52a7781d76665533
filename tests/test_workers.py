"""run_workers.sh as operators run it: start-up without a broker, clean shutdown, several schedulers."""

from __future__ import annotations

import signal
import threading

import pytest

import storage
from harness.factories import make, take
from harness.network import TcpRelay, via
from harness.processes import Service
from harness.waiting import wait_until
from storage import models, queries, schedule

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


@pytest.mark.parametrize(
    ("port", "relayed", "waiting_sign"),
    [
        # Unreachable broker: Dramatiq's consumers keep retrying the connection.
        pytest.param(5672, "BROKER_URL", "Connection refused", id="broker"),
        # Unreachable database: the worker cannot start, and run_workers.sh restarts it with backoff.
        pytest.param(5432, "DATABASE_URL", "restarting in", id="database"),
    ],
)
def test_workers_wait_at_start_up_until_a_server_is_reachable(
    tmp_path, fresh_postgres_url, rabbitmq_url, push_endpoint, port, relayed, waiting_sign
):
    relay = TcpRelay(port)  # closed: the server is unreachable when the workers start
    urls = {"DATABASE_URL": fresh_postgres_url, "BROKER_URL": rabbitmq_url}
    service = Service(tmp_path, **urls, PUSH_WEBHOOK_URL=push_endpoint.url)
    workers = Service(
        tmp_path, **{**urls, relayed: via(relay, urls[relayed])}, PUSH_WEBHOOK_URL=push_endpoint.url
    )
    try:
        service.start_api()
        nid = service.notify("push", recipient_id="u", content="after the server came back")
        workers.start_workers("push")
        wait_until(lambda: waiting_sign in workers.logs(), timeout=30)
        relay.open()
        service.await_status(nid, "Delivered", timeout=60)
    finally:
        workers.close()
        service.close()
        relay.cut()


def test_sigterm_finishes_the_delivery_in_flight(tmp_path, fresh_postgres_url, rabbitmq_url, push_endpoint):
    push_endpoint.delay = 1.5
    service = Service(
        tmp_path, DATABASE_URL=fresh_postgres_url, BROKER_URL=rabbitmq_url, PUSH_WEBHOOK_URL=push_endpoint.url
    )
    try:
        service.start_api()
        workers = service.start_workers()
        nid = service.notify("push", recipient_id="u", content="in flight")
        wait_until(lambda: service.get(nid)["status"] == "Processing")
        assert service.stop(workers, signal.SIGTERM) == 0
        assert service.get(nid)["status"] == "Delivered"
    finally:
        service.close()


def test_concurrent_schedulers_dispatch_each_row_once(db):
    for _ in range(200):
        make()
    taken: list[schedule.Publication] = []
    barrier = threading.Barrier(4)

    def scheduler():
        with storage.db.connection_context():
            barrier.wait()
            while batch := take(limit=20):
                taken.extend(batch)

    threads = [threading.Thread(target=scheduler) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(taken) == 200
    assert {d.notification_id for d in taken} == {str(n.id) for n in models.Notification.select()}
    assert {d.seq for d in taken} == {1}


def test_scheduler_outlives_a_connection_the_driver_already_closed(postgres_url):
    """A dropped connection raises OperationalError, then InterfaceError at its next use: both waited out."""
    from actors.scheduler import Scheduler

    storage.configure(postgres_url)
    with storage.db.connection_context():
        storage.db.execute_sql("TRUNCATE notification, notification_event")
    scheduler = Scheduler(["push"], interval=0.05).start()
    try:
        with storage.db.connection_context():
            first = make()
            wait_until(lambda: queries.get(first.id).message_seq == 1, timeout=10)
        # The scheduler's connection, as psycopg2 leaves it after the server dropped it mid-statement.
        for held in list(storage.db.obj._in_use.values()):
            held.connection.close()

        with storage.db.connection_context():
            second = make()
            wait_until(lambda: queries.get(second.id).message_seq == 1, timeout=15)
        assert scheduler._thread is not None and scheduler._thread.is_alive()
    finally:
        scheduler.stop()
        storage.db.close()
