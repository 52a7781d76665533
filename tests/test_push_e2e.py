"""Push to devices end to end: gunicorn, run_workers.sh, RabbitMQ, PostgreSQL, and local Web Push, FCM and
APNs services that check what the real ones check."""

from __future__ import annotations

import datetime as dt
import time

import pytest

import storage
from harness.processes import Service
from harness.push_services import ApnsService, FcmService, WebPushService
from harness.waiting import wait_until
from storage import queries

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

APNS_TOKEN = "c0ffee" * 12


@pytest.fixture
def webpush():
    with WebPushService() as service:
        yield service


@pytest.fixture
def fcm():
    with FcmService() as service:
        yield service


@pytest.fixture
def apns():
    with ApnsService() as service:
        yield service


@pytest.fixture
def service(tmp_path, fresh_postgres_url, rabbitmq_url, fcm, apns, request):
    running = Service(
        tmp_path,
        DATABASE_URL=fresh_postgres_url,
        BROKER_URL=rabbitmq_url,
        RETRY_DELAY="0.05",
        RETRY_MAX_DELAY="0.5",
        MAX_RETRY_ATTEMPTS="3",
        PUSH_ENDPOINT_ALLOWLIST="127.0.0.1",
        VAPID_PRIVATE_KEY_FILE=str(tmp_path / "vapid_private.pem"),
        FCM_CREDENTIALS_FILE=fcm.service_account("demo-project"),
        FCM_URL=fcm.origin,
        APNS_KEY_FILE=apns.provider_key("KEY1234567", "TEAM123456"),
        APNS_KEY_ID="KEY1234567",
        APNS_TEAM_ID="TEAM123456",
        APNS_TOPIC=apns.topic,
        APNS_URL=apns.url,
        APNS_SANDBOX_URL=apns.url,
        APNS_CA_FILE=apns.ca_file,
    )
    running.start_api()
    running.start_workers("push")
    yield running
    running.close()
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        print(running.logs())


def register(service: Service, recipient: str, body: dict) -> dict:
    status, answer = service.request("POST", f"/recipients/{recipient}/devices", body)
    assert status == 201, answer
    return answer


def browser(service: Service, webpush: WebPushService, recipient: str = "ann"):
    subscription = webpush.subscribe()
    return subscription, register(
        service, recipient, {"kind": "webpush", "subscription": subscription.as_json()}
    )


def accepted(push: WebPushService, subscription) -> list:
    return [r for r in push.received if r.subscription_id == subscription.id and r.status == 201]


def kinds_in_history(database_url: str, notification_id: str) -> list[str]:
    storage.configure(database_url)
    with storage.db.connection_context():
        return [e.kind for e in queries.history(notification_id)]


def soon(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


def test_every_kind_of_device_gets_the_notification(service, webpush, fcm, apns):
    subscription, browser_device = browser(service, webpush)
    phone = register(service, "ann", {"kind": "fcm", "token": "fcm-token-1"})
    iphone = register(service, "ann", {"kind": "apns", "token": APNS_TOKEN, "environment": "sandbox"})
    nid = service.notify("push", recipient_id="ann", content="Shipped", title="Order", collapse_key="o7")

    delivered = service.await_status(nid, "Delivered")

    (pushed,) = accepted(webpush, subscription)
    assert pushed.json == {
        "notification_id": nid, "recipient_id": "ann", "content": "Shipped", "title": "Order", "data": None,
    }  # fmt: skip
    (sent,) = fcm.wait_for(1)
    assert sent.message["token"] == "fcm-token-1" and sent.message["data"]["notification_id"] == nid
    (notified,) = apns.wait_for(1)
    assert notified.device_token == APNS_TOKEN and notified.payload["notification_id"] == nid
    by_device = {d["device_id"]: d for d in delivered["deliveries"]}
    assert by_device.keys() == {browser_device["id"], phone["id"], iphone["id"]}
    assert by_device[browser_device["id"]]["provider_message_id"].startswith(webpush.origin)
    assert by_device[phone["id"]]["provider_message_id"] == sent.name
    assert by_device[iphone["id"]]["provider_message_id"] == notified.apns_id
    assert {(d["status"], d["attempts"]) for d in by_device.values()} == {("delivered", 1)}
    status, listed = service.request("GET", "/recipients/ann/devices")
    assert status == 200 and all(d["last_success_at"] for d in listed["devices"])


def test_one_device_failing_transiently_is_retried_alone(service, webpush, fcm):
    subscription, browser_device = browser(service, webpush)
    phone = register(service, "ann", {"kind": "fcm", "token": "fcm-token-1"})
    fcm.fail_next(503, "UNAVAILABLE", times=2)
    nid = service.notify("push", recipient_id="ann", content="hello")

    delivered = service.await_status(nid, "Delivered")

    assert delivered["attempt_count"] == 3
    assert len(accepted(webpush, subscription)) == 1, "the browser got it exactly once"
    assert len(fcm.wait_for(1)) == 1
    attempts = {d["device_id"]: d["attempts"] for d in delivered["deliveries"]}
    assert attempts == {browser_device["id"]: 1, phone["id"]: 3}


def test_gone_devices_are_disabled_and_left_out_afterwards(service, webpush, fcm, apns, fresh_postgres_url):
    subscription, _ = browser(service, webpush)
    phone = register(service, "ann", {"kind": "fcm", "token": "fcm-token-1"})
    iphone = register(service, "ann", {"kind": "apns", "token": APNS_TOKEN})
    fcm.fail_next(404, "UNREGISTERED")
    apns.answer_next(410, "Unregistered", timestamp=int(time.time() * 1000) + 60_000)
    first = service.notify("push", recipient_id="ann", content="first")

    service.await_status(first, "Delivered")

    _, listed = service.request("GET", "/recipients/ann/devices")
    disabled = {d["id"]: d["disabled_reason"] for d in listed["devices"] if not d["active"]}
    assert disabled.keys() == {phone["id"], iphone["id"]}
    assert "UNREGISTERED" in disabled[phone["id"]] and "Unregistered" in disabled[iphone["id"]]
    assert kinds_in_history(fresh_postgres_url, first).count("device_gone") == 2

    second = service.notify("push", recipient_id="ann", content="second")
    delivered = service.await_status(second, "Delivered")
    assert [d["kind"] for d in delivered["deliveries"]] == ["webpush"]
    assert len(accepted(webpush, subscription)) == 2
    assert fcm.received == [] and apns.received == []

    status, again = service.request(
        "POST", "/recipients/ann/devices", {"kind": "fcm", "token": "fcm-token-1"}
    )
    assert (status, again["id"], again["active"]) == (200, phone["id"], True), "registered again: back"


def test_force_delivers_to_each_device_once_and_the_scheduled_message_does_nothing(
    service, webpush, fresh_postgres_url
):
    laptop, _ = browser(service, webpush)
    phone, _ = browser(service, webpush)
    nid = service.notify("push", recipient_id="ann", content="forced", scheduled_time=soon(5))
    wait_until(lambda: "queued" in kinds_in_history(fresh_postgres_url, nid))

    status, answer = service.request("POST", f"/notifications/{nid}/force")
    assert status == 200 and answer["task_id"]
    service.await_status(nid, "Delivered")
    wait_until(lambda: "skipped" in kinds_in_history(fresh_postgres_url, nid), timeout=15)

    assert len(accepted(webpush, laptop)) == len(accepted(webpush, phone)) == 1


def test_a_cancelled_push_reaches_no_device(service, webpush, fresh_postgres_url):
    browser(service, webpush)
    nid = service.notify("push", recipient_id="ann", content="never", scheduled_time=soon(3))
    wait_until(lambda: "queued" in kinds_in_history(fresh_postgres_url, nid))

    status, answer = service.request("POST", f"/notifications/{nid}/cancel")
    assert status == 200 and answer["task_id"]
    wait_until(lambda: "skipped" in kinds_in_history(fresh_postgres_url, nid), timeout=15)

    assert webpush.received == []
    assert service.get(nid)["deliveries"] == []


def test_a_kind_not_configured_is_refused_naming_what_is_missing(tmp_path):
    # The embedded default, without FCM's or APNs' settings.
    running = Service(
        tmp_path,
        DATABASE_URL=f"sqlite:///{tmp_path}/embedded.db",
        BROKER_URL="",
        FCM_CREDENTIALS_FILE="",
        APNS_KEY_FILE="",
        APNS_KEY_ID="",
        APNS_TEAM_ID="",
        APNS_TOPIC="",
        VAPID_PRIVATE_KEY_FILE=str(tmp_path / "vapid_private.pem"),
    )
    try:
        running.start_api()
        status, answer = running.request("POST", "/recipients/ann/devices", {"kind": "fcm", "token": "t"})
        assert status == 422
        assert "FCM_CREDENTIALS_FILE" in answer["errors"]["json"]["kind"][0]
        status, answer = running.request(
            "POST", "/recipients/ann/devices", {"kind": "apns", "token": APNS_TOKEN}
        )
        assert status == 422
        assert all(name in answer["errors"]["json"]["kind"][0] for name in ("APNS_KEY_FILE", "APNS_TOPIC"))
        status, key = running.request("GET", "/push/webpush-key")
        assert status == 200 and len(key["public_key"]) == 87  # 65 bytes, base64url without padding
    finally:
        running.close()
