"""Fan-out in process: the delivery actors on Dramatiq's StubBroker and worker, to a local Web Push service.

Each device is a subscription on a real local push service that verifies VAPID and decrypts what it
gets; a scripted answer makes one device gone or its service slow down.
"""

from __future__ import annotations

import json
import pathlib

import dramatiq
import pytest

import settings
from actors import broker, delivery
from actors.metrics import DeliveryMetrics
from harness.factories import make
from harness.push_services import WebPushService
from storage import deliveries, devices, models, queries, schedule, transitions


@pytest.fixture
def worker(db):
    broker.flush_all()
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=50)
    worker.start()
    yield worker
    worker.stop()
    broker.flush_all()


@pytest.fixture
def service():
    with WebPushService() as push:
        yield push


@pytest.fixture
def other_service():
    with WebPushService() as push:
        yield push


def browser(service, recipient="ann", label=None):
    """A subscription on ``service`` registered as a device of ``recipient``."""
    subscription = service.subscribe()
    device, _ = devices.register(
        recipient,
        kind="webpush",
        address=subscription.endpoint,
        p256dh=subscription.p256dh,
        auth=subscription.auth,
        label=label,
    )
    return subscription, device


def take() -> dict[str, int]:
    """Take what is due, as a scheduler pass does: the message numbers of one message."""
    return {p.notification_id: p.seq for p in schedule.take_due(horizon=60, lease=600, limit=100)}


def queue_due() -> None:
    """Send what is due as one message, at once."""
    delivery.deliver_push.send(take())


def settle(worker) -> None:
    """Await the queue's messages, retries included, being handled."""
    broker.join("push", timeout=30_000)
    worker.join()


def received_by(service, subscription) -> list:
    """What ``service`` accepted for ``subscription`` (not what it answered with a scripted error)."""
    return [r for r in service.received if r.subscription_id == subscription.id and r.status == 201]


def by_device(notification) -> dict:
    return {str(d.device_id) if d.device_id else None: d for d in deliveries.of_notification(notification.id)}


def test_a_push_goes_to_every_active_device_of_its_recipient(worker, service, other_service):
    laptop, laptop_device = browser(service, label="laptop")
    phone, phone_device = browser(other_service, label="phone")
    _, disabled = browser(service)
    devices.disable(disabled.id, "410 Gone")
    browser(service, recipient="bob")
    n = make(recipient_id="ann", title="Order", data={"order": 7}, ttl=600, urgency="high", collapse_key="o7")

    queue_due()
    settle(worker)

    assert queries.get(n.id).status == models.DELIVERED
    for push, subscription in ((service, laptop), (other_service, phone)):
        (got,) = received_by(push, subscription)
        assert got.json == {
            "notification_id": str(n.id), "recipient_id": "ann", "content": "hello", "title": "Order",
            "data": {"order": 7},
        }  # fmt: skip
        assert (got.headers["ttl"], got.headers["urgency"], got.headers["topic"]) == ("600", "high", "o7")
    assert len(service.received) + len(other_service.received) == 2, "not the disabled one, not bob's"
    rows = by_device(n)
    assert set(rows) == {str(laptop_device.id), str(phone_device.id)}
    for row in rows.values():
        assert (row.kind, row.status, row.attempts) == ("webpush", models.DELIVERED_DELIVERY, 1)
        assert row.provider_message_id.startswith("http://127.0.0.1:")
    assert all(d.last_success_at for d in devices.of_recipient("ann") if d.active)
    kinds = [e.kind for e in queries.history(n.id)]
    assert kinds.count("device_delivered") == 2 and kinds.count("delivered") == 1


def test_a_recipient_without_devices_gets_it_through_the_outbox_as_before(worker):
    n = make(recipient_id="nobody-registered")
    queue_due()
    settle(worker)
    assert queries.get(n.id).status == models.DELIVERED
    (row,) = deliveries.of_notification(n.id)
    assert (row.device_id, row.kind, row.status, row.attempts) == (None, "outbox", "delivered", 1)
    lines = (pathlib.Path(settings.OUTBOX_DIR) / "push.jsonl").read_text().splitlines()
    assert [json.loads(line)["recipient_id"] for line in lines if str(n.id) in line] == ["nobody-registered"]


def test_a_transient_failure_retries_only_the_device_that_did_not_accept(worker, service, other_service):
    steady, steady_device = browser(service)
    flaky, flaky_device = browser(other_service)
    other_service.answer_next(429, {"Retry-After": "0"})
    n = make(recipient_id="ann")

    queue_due()
    settle(worker)

    assert queries.get(n.id).status == models.DELIVERED
    assert queries.get(n.id).attempt_count == 2
    assert len(received_by(service, steady)) == 1, "the device that accepted is not sent to again"
    assert len(received_by(other_service, flaky)) == 1
    assert [r.status for r in other_service.received] == [429, 201]
    rows = by_device(n)
    assert (rows[str(steady_device.id)].attempts, rows[str(flaky_device.id)].attempts) == (1, 2)
    kinds = [e.kind for e in queries.history(n.id)]
    assert kinds.count("device_retry") == 1 and kinds.count("retry") == 1


def test_a_gone_device_is_disabled_and_not_sent_to_again(worker, service, other_service):
    kept, kept_device = browser(service)
    _, gone_device = browser(other_service)
    other_service.answer_next(410)
    first = make(recipient_id="ann")

    queue_due()
    settle(worker)

    assert queries.get(first.id).status == models.DELIVERED, "the other device accepted it"
    row = by_device(first)[str(gone_device.id)]
    assert row.status == models.FAILED_DELIVERY and "410" in row.error
    (disabled,) = [d for d in devices.of_recipient("ann") if not d.active]
    assert disabled.id == gone_device.id and "410" in disabled.disabled_reason
    assert disabled.disabled_at is not None
    assert "device_gone" in [e.kind for e in queries.history(first.id)]

    second = make(recipient_id="ann")
    queue_due()
    settle(worker)
    assert queries.get(second.id).status == models.DELIVERED
    assert set(by_device(second)) == {str(kept_device.id)}
    assert len(received_by(service, kept)) == 2
    assert len(other_service.received) == 1


def test_when_no_device_accepts_it_fails_saying_why_for_each(worker, service, other_service):
    _, gone = browser(service)
    _, refusing = browser(other_service)
    service.answer_next(410)
    other_service.answer_next(400)
    n = make(recipient_id="ann")

    queue_due()
    settle(worker)

    failed = queries.get(n.id)
    assert failed.status == models.FAILED and failed.attempt_count == 1
    assert f"webpush {gone.id}: gone, disabled:" in failed.last_error
    assert f"webpush {refusing.id}: " in failed.last_error and "400" in failed.last_error
    still = {d.id: d.active for d in devices.of_recipient("ann")}
    assert still == {gone.id: False, refusing.id: True}, "a 400 leaves the device active"


def test_a_recipient_whose_devices_are_all_gone_is_back_on_the_outbox(worker, service):
    _, device = browser(service)
    devices.disable(device.id, "410 Gone")
    n = make(recipient_id="ann")
    queue_due()
    settle(worker)
    assert [(d.device_id, d.kind) for d in deliveries.of_notification(n.id)] == [(None, "outbox")]
    assert service.received == []


def test_retries_exhausted_fail_the_waiting_device_but_the_accepted_one_counts(
    worker, service, other_service
):
    steady, _ = browser(service)
    _, flaky = browser(other_service)
    other_service.answer_next(503, {"Retry-After": "0"}, times=settings.MAX_RETRY_ATTEMPTS + 1)
    n = make(recipient_id="ann")

    queue_due()
    settle(worker)

    assert queries.get(n.id).status == models.DELIVERED
    assert queries.get(n.id).attempt_count == settings.MAX_RETRY_ATTEMPTS + 1
    row = by_device(n)[str(flaky.id)]
    assert (row.status, row.attempts) == (models.FAILED_DELIVERY, settings.MAX_RETRY_ATTEMPTS + 1)
    assert len(received_by(service, steady)) == 1


def test_a_duplicate_or_stale_message_sends_nothing(worker, service):
    subscription, _ = browser(service)
    n = make(recipient_id="ann", due_in=30)
    seqs = take()  # its scheduled message, not sent yet

    forced = transitions.force(n.id, host="api-1", lease=600)
    delivery.deliver_push.send(seqs)  # the scheduled message, now stale
    delivery.deliver_push.send({str(n.id): forced.message_seq})
    delivery.deliver_push.send({str(n.id): forced.message_seq})  # and a duplicate of the forced one
    settle(worker)

    assert queries.get(n.id).status == models.DELIVERED
    assert len(received_by(service, subscription)) == 1
    assert [e.kind for e in queries.history(n.id)].count("skipped") == 1


def test_a_cancelled_push_reaches_no_device(worker, service):
    browser(service)
    n = make(recipient_id="ann", due_in=30)
    seqs = take()
    transitions.cancel(n.id, host="api-1")
    delivery.deliver_push.send(seqs)
    settle(worker)
    assert service.received == []
    assert deliveries.of_notification(n.id) == []


def test_forcing_a_failed_push_tries_its_devices_again(worker, service):
    subscription, device = browser(service)
    service.answer_next(400)
    n = make(recipient_id="ann")
    queue_due()
    settle(worker)
    assert queries.get(n.id).status == models.FAILED

    forced = transitions.force(n.id, host="api-1", lease=600)
    delivery.deliver_push.send({str(n.id): forced.message_seq})
    settle(worker)

    assert queries.get(n.id).status == models.DELIVERED
    assert len(received_by(service, subscription)) == 1
    row = by_device(n)[str(device.id)]
    assert (row.status, row.attempts, row.error) == (models.DELIVERED_DELIVERY, 2, None)


def handle(middleware, seqs) -> None:
    """What a worker does with a message, minus the broker: the middleware around the actor."""
    message = delivery.deliver_push.message(seqs)
    for m in middleware:
        m.before_process_message(broker, message)
    try:
        delivery.deliver(seqs)
    finally:
        for m in reversed(middleware):
            m.after_process_message(broker, message)


def test_metrics_count_deliveries_per_kind_and_outcome_and_disabled_devices(db, service):
    for _ in range(3):
        browser(service)
    service.answer_next(201)
    service.answer_next(410)
    service.answer_next(400)
    make(recipient_id="ann")
    make(recipient_id="nobody")
    metrics = DeliveryMetrics()
    seqs = take()

    handle([metrics], seqs)
    handle([metrics], seqs)  # a duplicate counts nothing

    count = metrics.metrics.device_deliveries.labels
    assert count("webpush", "delivered")._value.get() == 1
    assert count("webpush", "gone")._value.get() == 1
    assert count("webpush", "failed")._value.get() == 1
    assert count("outbox", "delivered")._value.get() == 1
    assert metrics.metrics.devices_disabled.labels("webpush", "410")._value.get() == 1
    assert metrics.metrics.delivered.labels("push")._value.get() == 2


def test_a_retry_is_counted_as_one(db, service):
    browser(service)
    service.answer_next(503, {"Retry-After": "0"})
    make(recipient_id="ann")
    metrics = DeliveryMetrics()
    with pytest.raises(dramatiq.Retry):
        handle([metrics], take())
    assert metrics.metrics.device_deliveries.labels("webpush", "retry")._value.get() == 1
    assert metrics.metrics.delivered.labels("push")._value.get() == 0
