"""Delivery logic in one process: the actors on Dramatiq's StubBroker and a Worker, SQLite, a local endpoint.

What test_delivery.py checks through gunicorn, RabbitMQ and PostgreSQL, checked without any server:
retries, Retry-After, permanent failures, the half-lease give-back, stale messages and force.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name, q_name

import settings
from actors import broker, providers
from actors.delivery import deliver, deliver_push
from actors.providers import TransientDeliveryError
from actors.providers.webhook import WebhookProvider
from actors.scheduler import dispatch_due, publish_now
from harness.factories import make
from harness.receivers import PushReceiver
from storage import queries, schedule, transitions

WEEK = 7 * 24 * 3600.0


@pytest.fixture
def database_url(tmp_path) -> str:
    """SQLite alone (conftest's runs on PostgreSQL too): these tests need no server."""
    return f"sqlite:///{tmp_path}/delivery.db"


@pytest.fixture
def push(push_endpoint: PushReceiver, monkeypatch: pytest.MonkeyPatch) -> Iterator[PushReceiver]:
    """The push channel delivering to a local endpoint, through a provider made for this test."""
    monkeypatch.setattr(settings, "PUSH_WEBHOOK_URL", push_endpoint.url)
    monkeypatch.setattr(providers, "_providers", {})
    yield push_endpoint
    webhook = providers._providers.get("push")
    if isinstance(webhook, WebhookProvider):
        webhook.close()


@pytest.fixture
def stub_broker(db) -> Iterator[StubBroker]:
    """The actors' broker, in-process in tests, emptied before and after each test."""
    assert isinstance(broker, StubBroker)
    broker.flush_all()
    yield broker
    broker.flush_all()


@contextlib.contextmanager
def running_worker(stub: StubBroker) -> Iterator[dramatiq.Worker]:
    middleware = list(stub.middleware)
    worker = dramatiq.Worker(stub, worker_timeout=20, worker_threads=4)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
        # The worker leaves a middleware of its own on the broker, which outlives the test.
        stub.middleware[:] = middleware


@pytest.fixture
def stub_worker(stub_broker: StubBroker) -> Iterator[dramatiq.Worker]:
    with running_worker(stub_broker) as worker:
        yield worker


def drain(stub: StubBroker, worker: dramatiq.Worker) -> None:
    """Wait until the push queue's messages, their retries included, have all been handled."""
    stub.join("push", timeout=10_000)
    worker.join()


def events(notification_id: object) -> list[str]:
    # "queued" is recorded once the message is out, so a worker may come first: left out.
    return [e.kind for e in queries.history(notification_id) if e.kind not in ("created", "queued")]


def test_a_transient_failure_is_retried_then_delivered(push, stub_broker, stub_worker):
    push.script(503)
    notification = make()
    dispatch_due()
    drain(stub_broker, stub_worker)

    delivered = queries.get(notification.id)
    assert (delivered.status, delivered.attempt_count) == ("Delivered", 2)
    assert events(notification.id) == ["attempt", "retry", "attempt", "delivered"]
    assert len(push.requests) == 2 and push.unique_ids() == 1


def test_the_webhook_notifications_of_one_message_each_get_their_own_outcome(push, stub_broker, stub_worker):
    # Due within the batching window, the three go in one message, sent to the webhook together.
    delivered, retried, refused = (make(due_in=-0.03 + i * 0.01) for i in range(3))
    push.script(200, 503, (400, {}, b"no such hook"))
    dispatch_due()
    drain(stub_broker, stub_worker)

    assert (queries.get(delivered.id).status, queries.get(delivered.id).attempt_count) == ("Delivered", 1)
    assert (queries.get(retried.id).status, queries.get(retried.id).attempt_count) == ("Delivered", 2)
    assert events(retried.id) == ["attempt", "retry", "attempt", "delivered"]
    failed = queries.get(refused.id)
    assert (failed.status, events(refused.id)) == ("Failed", ["attempt", "failed"])
    assert "HTTP 400 no such hook" in failed.last_error
    assert len(push.requests) == 4 and push.unique_ids() == 3


def test_the_retry_comes_no_earlier_than_retry_after_asks(push, stub_broker, stub_worker):
    # Without the header the retry would come after RETRY_DELAY: 10 ms in tests.
    push.script((503, {"Retry-After": "1"}))
    notification = make()
    dispatch_due()
    drain(stub_broker, stub_worker)

    first, second = push.requests
    assert second.received_at - first.received_at >= 1.0
    assert queries.get(notification.id).status == "Delivered"


def test_a_permanent_failure_fails_at_once_with_the_reason(push, stub_broker, stub_worker):
    push.script((400, {}, b"no such device"))
    notification = make()
    dispatch_due()
    drain(stub_broker, stub_worker)

    failed = queries.get(notification.id)
    assert (failed.status, failed.attempt_count) == ("Failed", 1)
    assert "HTTP 400 no such device" in failed.last_error
    assert events(notification.id) == ["attempt", "failed"]
    assert len(push.requests) == 1


def test_retries_exhausted_fail_with_the_last_error(push, stub_broker, stub_worker):
    attempts = settings.MAX_RETRY_ATTEMPTS + 1
    push.script(*[503] * (attempts - 1), (502, {}, b"the last one"))
    notification = make()
    dispatch_due()
    drain(stub_broker, stub_worker)  # would raise had the message been dead-lettered instead

    failed = queries.get(notification.id)
    assert (failed.status, failed.attempt_count) == ("Failed", attempts)
    assert "HTTP 502 the last one" in failed.last_error
    assert events(notification.id)[-1] == "failed"
    assert len(push.requests) == attempts


def test_a_message_past_half_its_lease_gives_the_rest_back_to_its_retry(push, stub_broker, stub_worker):
    # More than go to the webhook in one go: some are still unsent when the time is up.
    ids = {str(make(recipient_id=f"u{n}").id) for n in range(12)}
    seqs = {
        p.notification_id: p.seq
        for p in schedule.take_due(horizon=settings.SCHEDULE_HORIZON, lease=settings.DISPATCH_LEASE, limit=20)
    }
    assert set(seqs) == ids

    def clock() -> float:
        # Half the lease goes by during the first request.
        return settings.PROCESSING_LEASE if push.requests else 0.0

    with pytest.raises(TransientDeliveryError, match="ran out of time"):
        deliver(seqs, clock=clock)
    sent = {r.body["notification_id"] for r in push.requests}
    assert sent and sent < ids, "what went in the first go is recorded, the rest given back"
    for notification_id in sent:
        assert queries.get(notification_id).status == "Delivered"
    for given_back in ids - sent:
        row = queries.get(given_back)
        assert (row.status, row.attempt_count) == ("Pending", 0)
        assert events(given_back) == ["attempt", "deferred"]

    deliver_push.send(seqs)  # its retry: the same message again, as the Retries middleware sends it
    drain(stub_broker, stub_worker)
    for notification_id in ids:
        row = queries.get(notification_id)
        assert (row.status, row.attempt_count) == ("Delivered", 1)
    assert sorted(r.body["notification_id"] for r in push.requests) == sorted(ids), "each sent once"
    assert not any("skipped" in events(nid) for nid in sent)  # what a retried message did is not stale


@pytest.mark.parametrize("since", ["forced", "cancelled"])
def test_a_stale_message_does_nothing_and_records_skipped(since, push, stub_broker, stub_worker):
    notification = make()
    (taken,) = schedule.take_due(horizon=settings.SCHEDULE_HORIZON, lease=settings.DISPATCH_LEASE, limit=10)
    # While its message is on the way, the notification is forced (a newer message_seq) or cancelled.
    if since == "forced":
        transitions.force(notification.id, host=settings.HOSTNAME, lease=settings.DISPATCH_LEASE)
    else:
        transitions.cancel(notification.id, host=settings.HOSTNAME)
    deliver_push.send({taken.notification_id: taken.seq})
    drain(stub_broker, stub_worker)

    row = queries.get(notification.id)
    assert (row.status, row.attempt_count) == ({"forced": "Pending", "cancelled": "Cancelled"}[since], 0)
    last = queries.history(notification.id)[-1]
    assert (last.kind, last.detail) == ("skipped", f"stale message {taken.seq}")
    assert push.requests == []


def take_delayed(stub: StubBroker) -> dramatiq.Message:
    """Take the push message waiting for its ETA off the broker, before a worker holds it."""
    delayed = stub.queues[dq_name("push")]
    message = dramatiq.Message.decode(delayed.get_nowait())
    delayed.task_done()
    return message


def arrive(stub: StubBroker, message: dramatiq.Message) -> None:
    """The message's ETA has come: it goes to its queue as a worker moves it there, without the ETA."""
    due = message.copy(queue_name=q_name(message.queue_name))
    del due.options["eta"]
    stub.enqueue(due)


def test_force_delivers_once_and_the_message_already_scheduled_is_then_stale(push, stub_broker, monkeypatch):
    # A horizon past next week: the scheduler publishes the message now, with a week's ETA.
    monkeypatch.setattr(settings, "SCHEDULE_HORIZON", 2 * WEEK)
    notification = make(due_in=WEEK)
    dispatch_due()
    scheduled = take_delayed(stub_broker)
    assert scheduled.args == ({str(notification.id): 1},)

    forced = transitions.force(notification.id, host=settings.HOSTNAME, lease=settings.DISPATCH_LEASE)
    publish_now(forced)
    # Started only now, so that it never holds the week-long message (join would wait for it).
    with running_worker(stub_broker) as worker:
        drain(stub_broker, worker)
        delivered = queries.get(notification.id)
        assert (delivered.status, delivered.attempt_count) == ("Delivered", 1)

        arrive(stub_broker, scheduled)  # next week
        drain(stub_broker, worker)
    assert [r.body["notification_id"] for r in push.requests] == [str(notification.id)]
    assert events(notification.id) == ["forced", "attempt", "delivered", "skipped"]
