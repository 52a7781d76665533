"""Status webhooks: events written with the changes they report, signed, retried, in order, never lost."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys

import pytest

import settings
import storage
from actors import status_webhooks
from actors.scheduler import status_events as publishing
from harness import factories
from harness.faults import accept_batch
from harness.processes import ROOT, Service
from harness.receivers import PushReceiver
from harness.status_webhooks import SECRET, verified
from harness.waiting import wait_until
from storage import devices, status_events, transitions
from storage.models import EVENT_FAILED, EVENT_PENDING, EVENT_SENT, Device, StatusEvent
from storage.representation import DeviceSchema, NotificationSchema


@pytest.fixture
def receiver(monkeypatch):
    with PushReceiver() as receiver:
        monkeypatch.setattr(settings, "STATUS_WEBHOOK_URL", receiver.url)
        monkeypatch.setattr(settings, "STATUS_WEBHOOK_SECRET", SECRET)
        monkeypatch.setattr(status_webhooks, "_receiver", [])
        yield receiver


def _send_due() -> int:
    """One pass and its messages, run here: what a webhooks worker does."""
    with storage.db.atomic():
        taken = status_events.take_due(horizon=0, lease=60)
    for due in taken:
        status_webhooks.send_status_event.fn(due.id, due.seq)
    return len(taken)


def _deliver(notification) -> None:
    seqs = {str(notification.id): 1}
    factories.settle(notification, message_seq=1)
    transitions.claim(seqs, host="w", lease=60)
    transitions.mark_delivered(seqs, host="w")


def test_a_delivery_sends_a_signed_event_with_the_notification(db, receiver):
    notification = factories.make()
    _deliver(notification)
    assert _send_due() == 1
    ((webhook_id, event),) = verified(receiver)
    assert webhook_id.startswith("msg_")
    assert event["type"] == "notification.delivered"
    stored = storage.queries.get(notification.id)
    assert event["data"] == NotificationSchema().dump(stored)
    assert event["data"]["status"] == "Delivered"
    assert StatusEvent.get().status == EVENT_SENT


def test_cancel_sends_an_event(db, receiver):
    notification = factories.make(due_in=3600)
    transitions.cancel(notification.id, host="api")
    _send_due()
    ((_, event),) = verified(receiver)
    assert event["type"] == "notification.cancelled"
    assert event["data"]["id"] == str(notification.id)


def test_an_opt_out_found_at_delivery_sends_a_cancelled_event(db, receiver):
    notification = factories.make()
    seqs = {str(notification.id): 1}
    factories.settle(notification, message_seq=1)
    transitions.claim(seqs, host="w", lease=60)
    assert transitions.mark_opted_out(notification.id, 1, host="w", reason="Recipient opted out of push")
    _send_due()
    ((_, event),) = verified(receiver)
    assert event["type"] == "notification.cancelled"
    assert event["data"]["last_error"] == "Recipient opted out of push"


def test_a_disabled_device_sends_an_event_with_the_device_as_the_api_shows_it(db, receiver):
    device, _ = devices.register("ada", kind="fcm", address="fcm-token-of-ada")
    assert devices.disable(device.id, "FCM: UNREGISTERED")
    assert not devices.disable(device.id, "FCM: UNREGISTERED"), "disabled once, one event"
    _send_due()
    ((_, event),) = verified(receiver)
    assert event["type"] == "device.disabled"
    assert event["data"] == DeviceSchema().dump(Device.get_by_id(device.id))
    assert (event["data"]["active"], event["data"]["disabled_reason"]) == (False, "FCM: UNREGISTERED")
    assert "address" not in event["data"] and "token" not in event["data"]


def test_opted_out_at_accept_and_erased_send_cancelled_events(client, receiver):
    client.put(
        "/recipients/bob", json={"email": "bob@example.com", "preferences": {"channels": {"push": False}}}
    )
    opted_out = client.post("/notifications/push", json={"recipient_id": "bob", "content": "hi"})
    waiting = client.post(
        "/notifications/email",
        json={"recipient_id": "bob", "content": "later", "scheduled_time": "2035-01-01T12:00:00"},
    )
    assert client.delete("/recipients/bob").status_code == 204
    while _send_due():
        pass
    events = [event for _, event in verified(receiver)]
    assert [(e["type"], e["data"]["id"]) for e in events] == [
        ("notification.cancelled", opted_out.json["notification_id"]),
        ("notification.cancelled", waiting.json["notification_id"]),
    ]
    assert events[0]["data"]["last_error"].startswith("Recipient opted out")
    assert "later" not in json.dumps(events[1]) and "bob@example.com" not in json.dumps(events[1])


def test_no_events_are_written_without_the_url(db, monkeypatch):
    monkeypatch.setattr(settings, "STATUS_WEBHOOK_URL", "")
    _deliver(factories.make())
    assert StatusEvent.select().count() == 0


def test_a_refused_event_is_retried_with_the_same_id_honouring_retry_after(db, receiver):
    receiver.script((503, {"Retry-After": "7"}))
    _deliver(factories.make())
    _send_due()
    event = StatusEvent.get()
    assert event.status == EVENT_PENDING and event.attempts == 1
    assert (event.next_attempt_at - event.occurred_at).total_seconds() >= 7
    StatusEvent.update(next_attempt_at=event.occurred_at).execute()  # the wait is over
    _send_due()
    first, second = verified(receiver)
    assert first[0] == second[0]
    assert StatusEvent.get().status == EVENT_SENT


def test_a_later_event_waits_for_an_earlier_one_still_being_retried(db, receiver):
    notification = factories.make()
    seqs = {str(notification.id): 1}
    factories.settle(notification, message_seq=1)
    transitions.claim(seqs, host="w", lease=60)
    transitions.mark_failed(notification.id, 1, host="w", error="no")
    receiver.script(500)
    _send_due()  # the failed event is refused
    transitions.force(notification.id, host="api", lease=60)
    transitions.claim({str(notification.id): 2}, host="w", lease=60)
    transitions.mark_delivered({str(notification.id): 2}, host="w")
    StatusEvent.update(next_attempt_at=StatusEvent.occurred_at).execute()
    # The delivered event is not due while the failed one is unfinished: one message, the failed one's.
    assert _send_due() == 1
    assert _send_due() == 1
    types = [event["type"] for _, event in verified(receiver)]
    assert types == ["notification.failed", "notification.failed", "notification.delivered"]


def test_an_event_refused_past_the_max_age_is_failed_and_can_be_sent_again(db, receiver, monkeypatch):
    monkeypatch.setattr(settings, "STATUS_WEBHOOK_MAX_AGE", 1.0)
    monkeypatch.setattr(settings, "RETRY_DELAY", 5.0)
    receiver.script(500)
    _deliver(factories.make())
    _send_due()
    (event,) = status_events.failed()
    assert event.status == EVENT_FAILED and "500" in event.last_error
    assert status_events.send_again(event.id)
    _send_due()
    assert len(verified(receiver)) == 2
    assert StatusEvent.get().status == EVENT_SENT


def test_a_redirect_is_not_followed(db, receiver):
    receiver.script((302, {"Location": "http://127.0.0.1:1/elsewhere"}))
    _deliver(factories.make())
    _send_due()
    assert len(receiver.requests) == 1
    assert StatusEvent.get().last_error == "status webhook answered 302"


def test_a_message_for_a_stale_seq_does_nothing(db, receiver):
    _deliver(factories.make())
    with storage.db.atomic():
        (due,) = status_events.take_due(horizon=0, lease=60)
    status_webhooks.send_status_event.fn(due.id, due.seq - 1)
    status_webhooks.send_status_event.fn(due.id, due.seq)
    status_webhooks.send_status_event.fn(due.id, due.seq)  # a duplicate
    assert len(receiver.requests) == 1


def test_publish_due_events_enqueues_one_message_per_event(db, receiver, monkeypatch):
    sent = []
    monkeypatch.setattr(publishing.broker, "enqueue", lambda message, delay=None: sent.append(message.args))
    _deliver(factories.make())
    assert publishing.publish_due_events() == 1
    assert publishing.publish_due_events() == 0  # owned by the message now
    assert len(sent) == 1


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_every_event_arrives_through_a_killed_worker_and_a_receiver_down(
    tmp_path, fresh_postgres_url, rabbitmq_url, push_endpoint, report
):
    with PushReceiver() as hooks:
        service = Service(
            tmp_path,
            DATABASE_URL=fresh_postgres_url,
            BROKER_URL=rabbitmq_url,
            PUSH_WEBHOOK_URL=push_endpoint.url,
            STATUS_WEBHOOK_URL=hooks.url,
            STATUS_WEBHOOK_SECRET=SECRET,
            RETRY_DELAY="0.2",
            RETRY_MAX_DELAY="1",
        )
        try:
            service.start_api()
            hooks.script(*[503] * 30)  # the receiver is down for the first 30 tries
            service.start_workers("push")
            webhooks = service.start_workers("webhooks")
            accepted = accept_batch(service, 200, "w-")
            wait_until(lambda: len(hooks.requests) >= 60, timeout=60)
            service.stop(webhooks, signal.SIGKILL)  # with events pending and some in flight
            service.start_workers("webhooks")
            wait_until(
                lambda: (
                    {e["data"]["id"] for _, e in verified(hooks) if e["type"] == "notification.delivered"}
                    >= set(accepted)
                ),
                timeout=120,
                what="an event for every notification",
            )
            events = verified(hooks)
            ids = {webhook_id for webhook_id, _ in events}
            report(
                f"status webhooks: events={len(accepted)}, requests={len(events)}, distinct ids={len(ids)}"
            )
            assert len(ids) == len(accepted)
        finally:
            service.close()


def test_the_dashboard_shows_failed_events_and_sends_one_again(app, client, receiver, monkeypatch):
    monkeypatch.setattr(settings, "STATUS_WEBHOOK_MAX_AGE", 1.0)
    monkeypatch.setattr(settings, "RETRY_DELAY", 5.0)
    with app.app_context():
        receiver.script(500)
        _deliver(factories.make())
        _send_due()
        (event,) = status_events.failed()
    page = client.get("/dashboard/webhooks").text
    assert "notification.delivered" in page and "status webhook answered 500" in page
    csrf = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page)[1]
    answer = client.post(f"/dashboard/webhooks/{event.id}/send-again", data={"csrf_token": csrf})
    assert answer.status_code == 303
    with app.app_context():
        assert StatusEvent.get().status == EVENT_PENDING
        _send_due()
        assert StatusEvent.get().status == EVENT_SENT
    again = client.post(f"/dashboard/webhooks/{event.id}/send-again", data={"csrf_token": csrf})
    assert "is+not+a+failed+one" in again.headers["Location"]


def _settings_with(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import settings"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    "secret",
    [
        "",
        "not-a-secret",
        "whsec_!!!",
        "whsec_" + base64.b64encode(b"short").decode(),
        SECRET.replace("whsec", "wh"),
    ],
)
def test_a_bad_or_missing_secret_stops_start_up_naming_it(secret):
    result = _settings_with(STATUS_WEBHOOK_URL="http://127.0.0.1:9/hooks", STATUS_WEBHOOK_SECRET=secret)
    assert result.returncode != 0
    assert "STATUS_WEBHOOK_SECRET" in result.stderr


def test_a_good_secret_starts():
    result = _settings_with(STATUS_WEBHOOK_URL="http://127.0.0.1:9/hooks", STATUS_WEBHOOK_SECRET=SECRET)
    assert result.returncode == 0, result.stderr
