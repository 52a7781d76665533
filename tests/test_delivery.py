"""Delivery end to end: gunicorn, run_workers.sh, RabbitMQ, PostgreSQL, real SMTP and HTTP receivers."""

from __future__ import annotations

import datetime as dt
import signal

import pika
import pytest

import storage
from harness.processes import Service
from harness.waiting import wait_until
from storage import models, queries

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


@pytest.fixture
def service_settings(fresh_postgres_url, rabbitmq_url, push_endpoint, smtp_server):
    return {
        "DATABASE_URL": fresh_postgres_url,
        "BROKER_URL": rabbitmq_url,
        "PUSH_WEBHOOK_URL": push_endpoint.url,
        "SMTP_URL": smtp_server.url,
        "EMAIL_FROM": "service@example.org",
        "RETRY_DELAY": "0.05",
        "RETRY_MAX_DELAY": "0.5",
        "MAX_RETRY_ATTEMPTS": "3",
    }


@pytest.fixture
def service(tmp_path, service_settings, request):
    running = Service(tmp_path, **service_settings)
    yield running
    running.close()
    call = getattr(request.node, "rep_call", None)  # set by conftest's pytest_runtest_makereport
    if call is not None and call.failed:
        print(running.logs())  # shown with the failure, under "Captured stdout teardown"


def soon(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


def history(database_url: str, notification_id: str) -> list[str]:
    storage.configure(database_url)
    with storage.db.connection_context():
        return [e.kind for e in queries.history(notification_id)]


def test_push_and_email_are_delivered_end_to_end(service, push_endpoint, smtp_server):
    service.start_api()
    service.start_workers()
    push_id = service.notify(
        "push", recipient_id="user-1", content="Shipped", title="Order", data={"order": 7}
    )
    email_id = service.notify(
        "email", recipient_id="ann@example.com", content="Invoice ready", subject="Invoice"
    )

    (request,) = push_endpoint.wait_for(1)
    assert request.body == {
        "notification_id": push_id, "recipient_id": "user-1", "content": "Shipped", "title": "Order",
        "data": {"order": 7},
    }  # fmt: skip
    assert request.headers["Idempotency-Key"] == push_id
    (mail,) = smtp_server.wait_for(1)
    assert mail.message["Subject"] == "Invoice"
    assert mail.message["To"] == "ann@example.com"
    assert push_id not in mail.message["Message-ID"] and email_id in mail.message["Message-ID"]

    for nid in (push_id, email_id):
        delivered = service.await_status(nid, "Delivered")
        assert delivered["attempt_count"] == 1
        assert delivered["delivered_at"] is not None


def test_transient_failures_are_retried_then_delivered(service, push_endpoint):
    push_endpoint.script(503, (429, {"Retry-After": "0"}))
    service.start_api()
    service.start_workers("push")
    nid = service.notify("push", recipient_id="u", content="hello")
    delivered = service.await_status(nid, "Delivered")
    assert delivered["attempt_count"] == 3
    assert len(push_endpoint.requests) == 3
    assert push_endpoint.unique_ids() == 1


def test_a_failure_in_a_message_retries_only_its_own_notification(service, push_endpoint, fresh_postgres_url):
    push_endpoint.script(503)
    service.start_api()
    service.start_workers("push")
    due = soon(3)  # all due at once, so that one message carries them all
    ids = [service.notify("push", recipient_id=f"u{i}", content="hi", scheduled_time=due) for i in range(5)]
    attempts = sorted(service.await_status(nid, "Delivered")["attempt_count"] for nid in ids)
    assert attempts == [1, 1, 1, 1, 2]
    assert len(push_endpoint.requests) == 6 and push_endpoint.unique_ids() == 5
    for nid in ids:
        kinds = history(fresh_postgres_url, nid)
        assert kinds.count("delivered") == 1 and "skipped" not in kinds, kinds
    with storage.db.connection_context():
        first_claims = {next(e.at for e in queries.history(nid) if e.kind == "attempt") for nid in ids}
    assert len(first_claims) == 1, "one message claimed all five at once"


def test_smtp_4xx_is_retried_and_5xx_fails_without_retry(service, smtp_server):
    service.start_api()
    service.start_workers("email")
    smtp_server.reject_next(451, "4.3.0 try again later")
    retried = service.notify("email", recipient_id="a@example.com", content="x")
    assert service.await_status(retried, "Delivered")["attempt_count"] == 2

    smtp_server.reject_next(550, "5.1.1 no such user")
    failed = service.notify("email", recipient_id="b@example.com", content="x")
    body = service.await_status(failed, "Failed")
    assert body["attempt_count"] == 1
    assert "550" in body["last_error"]


def test_permanent_failure_fails_at_once(service, push_endpoint):
    push_endpoint.script(400)
    service.start_api()
    service.start_workers("push")
    nid = service.notify("push", recipient_id="u", content="hello")
    failed = service.await_status(nid, "Failed")
    assert failed["attempt_count"] == 1
    assert "400" in failed["last_error"]
    assert len(push_endpoint.requests) == 1


def test_retries_exhausted_fail_with_the_last_error(service, push_endpoint):
    push_endpoint.script(*[503] * 10)
    service.start_api()
    service.start_workers("push")
    nid = service.notify("push", recipient_id="u", content="hello")
    failed = service.await_status(nid, "Failed")
    assert failed["attempt_count"] == 4  # the first attempt and MAX_RETRY_ATTEMPTS=3 retries
    assert "503" in failed["last_error"]
    assert len(push_endpoint.requests) == 4


def test_cancel_racing_delivery_never_delivers(service, push_endpoint, fresh_postgres_url):
    # Small messages, so that claims go on while the cancels come; each cancel races one of them.
    service.env["DELIVERY_BATCH_SIZE"] = "4"
    service.start_api()
    service.start_workers("push")
    due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    push_endpoint.delay = 0.05  # 80 deliveries take at least 0.5 s on 8 threads: cancels overlap them
    ids = [
        service.notify("push", recipient_id=f"u{i}", content="race", scheduled_time=due.isoformat())
        for i in range(80)
    ]
    # Cancel them one after another once deliveries have begun: each cancel races a worker's claim.
    push_endpoint.wait_for(1)
    outcomes = {}
    for nid in ids:
        status, answer = service.request("POST", f"/notifications/{nid}/cancel")
        assert status in (200, 409), answer
        outcomes[nid] = (status, answer.get("task_id"))
    cancelled = {nid for nid, (status, _) in outcomes.items() if status == 200}
    delivered = set(ids) - cancelled
    for nid in delivered:
        service.await_status(nid, "Delivered")
    # Every queued message of a cancelled notification has come and done nothing.
    for nid, (status, task_id) in outcomes.items():
        if status == 200 and task_id:
            wait_until(lambda nid=nid: "skipped" in history(fresh_postgres_url, nid))
    received = {r.body["notification_id"] for r in push_endpoint.requests}
    assert received.isdisjoint(cancelled)
    assert received == delivered
    assert cancelled and delivered, "the race should go both ways"


def test_force_delivers_at_once_and_exactly_once(service, push_endpoint, fresh_postgres_url):
    service.start_api()
    service.start_workers("push")
    nid = service.notify("push", recipient_id="u", content="forced", scheduled_time=soon(5))
    wait_until(lambda: "queued" in history(fresh_postgres_url, nid))  # its ETA message is in the broker

    status, answer = service.request("POST", f"/notifications/{nid}/force")
    assert status == 200 and answer["task_id"]
    push_endpoint.wait_for(1)
    delivered = service.await_status(nid, "Delivered")
    # At once: ahead of its schedule, which the original message was waiting for.
    assert dt.datetime.fromisoformat(delivered["delivered_at"]) < dt.datetime.fromisoformat(
        delivered["scheduled_time"]
    )

    # The original scheduled message comes at its ETA and does nothing.
    wait_until(lambda: "skipped" in history(fresh_postgres_url, nid), timeout=15)
    kinds = history(fresh_postgres_url, nid)
    assert kinds.index("forced") < kinds.index("delivered") < kinds.index("skipped"), kinds
    assert [r.body["notification_id"] for r in push_endpoint.requests] == [nid]


def test_worker_killed_mid_delivery_loses_nothing(
    tmp_path, service_settings, push_endpoint, fresh_postgres_url
):
    push_endpoint.delay = 1.0  # every delivery is in flight for a second
    service = Service(tmp_path, **service_settings, PROCESSING_LEASE="2", WORKER_THREADS="4")
    try:
        service.start_api()
        workers = service.start_workers("push")
        ids = [service.notify("push", recipient_id=f"u{i}", content="survive") for i in range(12)]
        push_endpoint.wait_for(1)
        assert service.stop(workers, signal.SIGKILL) == -signal.SIGKILL
        push_endpoint.delay = 0.0
        service.start_workers("push")
        for nid in ids:
            service.await_status(nid, "Delivered", timeout=30)
        # Each arrived at least once; the duplicates the kill caused carry the same Idempotency-Key.
        assert push_endpoint.unique_ids() == len(ids)
    finally:
        service.close()


def test_far_future_notifications_put_nothing_in_the_broker(
    service, push_endpoint, rabbitmq_url, fresh_postgres_url
):
    service.start_api()
    service.start_workers("push")
    next_week = (dt.datetime.now(dt.UTC) + dt.timedelta(days=7)).replace(hour=12).isoformat()
    far = [
        service.notify("push", recipient_id=f"u{i}", content="later", scheduled_time=next_week)
        for i in range(50)
    ]
    # A notification due now is dispatched after the far ones were committed: the scheduler has seen them.
    now_id = service.notify("push", recipient_id="now", content="now")
    service.await_status(now_id, "Delivered")

    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        channel = connection.channel()
        for queue in ("push", "push.DQ"):
            assert channel.queue_declare(queue, passive=True).method.message_count == 0
    finally:
        connection.close()
    storage.configure(fresh_postgres_url)
    with storage.db.connection_context():
        assert (
            models.Notification.select()
            .where(models.Notification.id.in_(far), models.Notification.message_seq > 0)
            .count()
            == 0
        )
    assert len(push_endpoint.requests) == 1


def test_embedded_mode_starts_cleanly_and_delivers_to_the_outbox(tmp_path):
    service = Service(
        tmp_path,
        DATABASE_URL=f"sqlite:///{tmp_path}/embedded.db",
        BROKER_URL="",
        PUSH_WEBHOOK_URL="",
        SMTP_URL="",
    )
    try:
        service.start_api()
        nid = service.notify("push", recipient_id="newcomer", content="hello")
        email_id = service.notify(
            "email", recipient_id="newcomer@example.com", content="hi", subject="Welcome"
        )
        service.await_status(nid, "Delivered")
        service.await_status(email_id, "Delivered")
        lines = (tmp_path / "outbox" / "push.jsonl").read_text().splitlines()
        assert nid in lines[0]
        (mail,) = (tmp_path / "outbox" / "email" / "new").iterdir()
        assert email_id in mail.read_text()
        # A first start on a new SQLite file: the schema migration and the scheduler share it.
        complaints = [
            line for line in service.logs().splitlines() if " WARNING " in line or " ERROR " in line
        ]
        assert complaints == []
    finally:
        service.close()


def test_embedded_restart_sends_what_was_accepted_before_it(tmp_path):
    settings = {"DATABASE_URL": f"sqlite:///{tmp_path}/embedded.db", "BROKER_URL": "", "PUSH_WEBHOOK_URL": ""}
    first = Service(tmp_path, **settings)
    try:
        first.start_api()
        # Due in a few seconds: its message waits in the in-process broker, which the stop loses.
        nid = first.notify("push", recipient_id="u", content="survives a restart", scheduled_time=soon(3))
        assert first.get(nid)["status"] == "Pending"
    finally:
        first.close()
    second = Service(tmp_path, **settings)
    try:
        second.start_api()
        second.await_status(nid, "Delivered", timeout=30)
        lines = (tmp_path / "outbox" / "push.jsonl").read_text().splitlines()
        assert [line for line in lines if nid in line] != []
    finally:
        second.close()
