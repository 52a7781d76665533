"""Device senders against real local push services: Web Push, FCM and its token endpoint, APNs (HTTP/2)."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import logging
import os
import pathlib
import stat
import subprocess
import sys
import time

import http_ece
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.providers import endpoints
from actors.providers import webpush as webpush_module
from actors.providers.apns import ApnsSender
from actors.providers.base import (
    Device,
    DeviceGone,
    Envelope,
    NotConfigured,
    PermanentDeliveryError,
    PushMessage,
    TransientDeliveryError,
    reserved_data_keys,
)
from actors.providers.fcm import FcmSender
from actors.providers.webhook import push_payload
from actors.providers.webpush import (
    MAX_PAYLOAD_BYTES,
    WebPushSender,
    load_vapid_key,
    payload_bytes,
    vapid_public_key,
)
from harness.bulk_webpush import BulkWebPushService
from harness.push_services import ApnsService, FcmService, WebPushService

ROOT = pathlib.Path(__file__).resolve().parent.parent
SUBJECT = "mailto:ops@example.com"
MESSAGE = PushMessage(
    "0b9f7c3e-5d1a-4c2b-9e8f-1a2b3c4d5e6f",
    "user-42",
    "Your order has shipped",
    title="Order 1234",
    data={"order": 1234, "tags": ["a", "b"], "url": "https://shop.example/o/1234"},
    ttl=600,
    urgency="high",
    collapse_key="order-1234",
)
PLAIN = PushMessage("n-plain", "user-42", "No title, no data", ttl=0, urgency="low")


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter, with the push settings of the environment removed first."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VAPID_", "FCM_", "APNS_"))}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- Web Push and UnifiedPush ----------------------------------------------------------------------


@pytest.fixture
def push_service():
    with WebPushService() as service:
        yield service


@pytest.fixture
def key_file(tmp_path):
    return str(tmp_path / "vapid_private.pem")


@pytest.fixture
def webpush(key_file):
    sender = WebPushSender(key_file=key_file, subject=SUBJECT, allowlist={"127.0.0.1"}, timeout=5)
    yield sender
    sender.close()


def device_of(subscription, kind="webpush") -> Device:
    return Device("dev-1", kind, subscription.endpoint, subscription.p256dh, subscription.auth)


@pytest.mark.parametrize("kind", ["webpush", "unifiedpush"])
def test_web_push_delivers_the_webhook_document_encrypted_and_signed(push_service, key_file, kind):
    sender = WebPushSender(kind, key_file=key_file, subject=SUBJECT, allowlist={"127.0.0.1"})
    subscription = push_service.subscribe()

    location = sender.send(device_of(subscription, kind), MESSAGE)
    sender.close()

    [received] = push_service.wait_for(1)
    assert push_service.refusals == []
    assert location.startswith(f"{push_service.origin}/message/")
    envelope = Envelope(
        MESSAGE.notification_id,
        "push",
        MESSAGE.recipient_id,
        MESSAGE.content,
        title=MESSAGE.title,
        data=MESSAGE.data,
    )
    assert received.json == push_payload(envelope)
    assert received.headers["content-encoding"] == "aes128gcm"
    assert (received.headers["ttl"], received.headers["urgency"], received.headers["topic"]) == (
        "600",
        "high",
        "order-1234",
    )
    assert received.claims["aud"] == push_service.origin
    assert received.claims["sub"] == SUBJECT
    assert received.claims["exp"] <= time.time() + 24 * 3600
    assert received.vapid_key == vapid_public_key(key_file)


def test_no_topic_without_a_collapse_key_and_ttl_zero_is_sent_as_zero(push_service, webpush):
    webpush.send(device_of(push_service.subscribe()), PLAIN)

    [received] = push_service.wait_for(1)
    assert "topic" not in received.headers
    assert (received.headers["ttl"], received.headers["urgency"]) == ("0", "low")
    assert received.json["title"] is None and received.json["data"] is None


def test_each_push_service_gets_its_own_audience(webpush):
    # Signing with one claims dict for two services would give the second the first one's aud.
    with WebPushService() as first, WebPushService() as second:
        webpush.send(device_of(first.subscribe()), MESSAGE)
        webpush.send(device_of(second.subscribe()), MESSAGE)

        assert first.wait_for(1)[0].claims["aud"] == first.origin
        assert second.wait_for(1)[0].claims["aud"] == second.origin
        assert first.refusals == second.refusals == []


def test_messages_reuse_the_thread_s_connection(push_service, webpush):
    device = device_of(push_service.subscribe())
    for _ in range(5):
        webpush.send(device, MESSAGE)

    assert len(push_service.wait_for(5)) == 5
    assert push_service.connections == 1


@pytest.mark.parametrize("status", [404, 410, 403])
def test_a_gone_subscription_is_device_gone(push_service, webpush, status):
    push_service.answer_next(status)

    with pytest.raises(DeviceGone, match=f"HTTP {status}"):
        webpush.send(device_of(push_service.subscribe()), MESSAGE)


def test_an_unknown_subscription_is_device_gone(push_service, webpush):
    subscription = push_service.subscribe()
    unknown = Device(
        "dev-2", "webpush", f"{push_service.origin}/push/never-made", subscription.p256dh, subscription.auth
    )

    with pytest.raises(DeviceGone, match="404"):
        webpush.send(unknown, MESSAGE)


def test_429_is_transient_with_its_retry_after(push_service, webpush):
    push_service.answer_next(429, {"Retry-After": "120"})

    with pytest.raises(TransientDeliveryError) as caught:
        webpush.send(device_of(push_service.subscribe()), MESSAGE)
    assert caught.value.retry_after == 120


def test_a_server_error_is_transient(push_service, webpush):
    push_service.answer_next(500)

    with pytest.raises(TransientDeliveryError, match="HTTP 500"):
        webpush.send(device_of(push_service.subscribe()), MESSAGE)


def test_another_4xx_fails_the_delivery_but_not_the_device(push_service, webpush):
    push_service.answer_next(413)

    with pytest.raises(PermanentDeliveryError, match="HTTP 413") as caught:
        webpush.send(device_of(push_service.subscribe()), MESSAGE)
    assert not isinstance(caught.value, DeviceGone)


def test_a_refused_connection_is_transient(webpush, push_service):
    subscription = push_service.subscribe()
    push_service.stop()

    with pytest.raises(TransientDeliveryError, match=r"POST http://127\.0\.0\.1"):
        webpush.send(device_of(subscription), MESSAGE)


def message_of_json_size(size: int) -> PushMessage:
    base = len(payload_bytes(PushMessage("n-big", "user-42", "")))
    return PushMessage("n-big", "user-42", "x" * (size - base))


def test_3993_bytes_of_json_fill_the_4096_bytes_every_push_service_takes(push_service, webpush):
    message = message_of_json_size(MAX_PAYLOAD_BYTES)
    assert MAX_PAYLOAD_BYTES == 3993 and len(payload_bytes(message)) == 3993

    webpush.send(device_of(push_service.subscribe()), message)

    [received] = push_service.wait_for(1)
    assert len(received.body) == 4096
    assert received.json["content"] == message.content


def test_a_payload_over_3993_bytes_fails_before_sending(push_service, webpush):
    with pytest.raises(PermanentDeliveryError, match="3994 bytes of JSON; Web Push carries at most 3993"):
        webpush.send(device_of(push_service.subscribe()), message_of_json_size(3994))
    assert push_service.connections == 0


def test_a_redirect_is_refused_not_followed(push_service, webpush):
    elsewhere = push_service.subscribe()
    push_service.answer_next(307, {"Location": elsewhere.endpoint})

    subscription = push_service.subscribe()

    with pytest.raises(PermanentDeliveryError, match=r"redirects .* are not followed") as caught:
        webpush.send(device_of(subscription), MESSAGE)

    assert not isinstance(caught.value, DeviceGone)
    assert [r.subscription_id for r in push_service.received] == [subscription.id]


@pytest.mark.parametrize(
    "endpoint",
    [
        "{origin}/push/{id}",  # http:// to loopback, not allow-listed
        "https://127.0.0.1:{port}/push/{id}",
        "https://localhost:{port}/push/{id}",
        "https://[::ffff:127.0.0.1]:{port}/push/{id}",
        "https://169.254.169.254/latest/meta-data",
    ],
)
def test_a_non_public_endpoint_is_refused_at_send_time(push_service, key_file, endpoint):
    subscription = push_service.subscribe()
    port = push_service.origin.rsplit(":", 1)[1]
    address = endpoint.format(origin=push_service.origin, port=port, id=subscription.id)
    # Registered while allow-listed, say, and no longer: the check is made again before each send.
    sender = WebPushSender(key_file=key_file, subject=SUBJECT, allowlist=frozenset())

    with pytest.raises(PermanentDeliveryError, match="refused"):
        sender.send(Device("dev-1", "webpush", address, subscription.p256dh, subscription.auth), MESSAGE)
    assert push_service.connections == 0


def test_an_endpoint_a_request_cannot_carry_fails_the_delivery_before_any_connection(key_file):
    sender = WebPushSender(key_file=key_file, subject=SUBJECT, allowlist={"bücher.example"})
    device = Device("dev-1", "webpush", "http://bücher.example/push/x", RFC_RECEIVER_PUBLIC, RFC_AUTH)

    with pytest.raises(PermanentDeliveryError, match="refused: the URL holds what a request cannot"):
        sender.send(device, MESSAGE)


def test_a_connection_goes_only_to_an_address_judged_public(push_service):
    # The address connected to is the one judged: a name resolving anew to a private address (DNS
    # rebinding) between a check and the connection has nothing to gain.
    port = int(push_service.origin.rsplit(":", 1)[1])
    with pytest.raises(endpoints.UnsafeEndpoint, match=r"localhost is or resolves to .*not a public"):
        endpoints.connect("localhost", port, 5, allowed=False)
    assert push_service.connections == 0

    endpoints.connect("127.0.0.1", port, 5, allowed=True).close()
    push_service.wait(lambda: push_service.connections == 1, 5, "the allowed connection")


def test_one_vapid_jwt_serves_every_message_to_a_push_service(push_service, webpush):
    for _ in range(3):
        webpush.send(device_of(push_service.subscribe()), MESSAGE)

    received = push_service.wait_for(3)
    assert len({r.headers["authorization"] for r in received}) == 1
    assert received[0].claims["exp"] > time.time() + 6 * 3600


def test_a_connection_the_push_service_closed_while_idle_is_replaced_before_sending(push_service, webpush):
    device = device_of(push_service.subscribe())
    webpush.send(device, MESSAGE)
    push_service.close_connections()

    webpush.send(device, MESSAGE)

    assert len(push_service.wait_for(2)) == 2
    assert push_service.connections == 2


def test_the_benchmarks_push_service_checks_as_the_other_and_decrypts_everything_after(webpush):
    with BulkWebPushService() as push:
        subscriptions = [push.subscribe() for _ in range(3)]
        for subscription in subscriptions:
            webpush.send(device_of(subscription), MESSAGE)
        # Another key's subscription would not decrypt: it is refused afterwards, not counted.
        wrong = push.subscribe()
        webpush.send(dataclasses.replace(device_of(wrong), auth=subscriptions[0].auth), MESSAGE)
        push.wait_accepted(4, timeout=10)
        assert push.received == [] and push.refusals == []
        assert push.handle(f"/push/{wrong.id}", {"authorization": "vapid t=x,k=y"}, b"")[0] == 401

        push.refusals.clear()

        received = push.decrypt_received()

    assert [r.subscription_id for r in received] == [s.id for s in subscriptions]
    assert {r.json["notification_id"] for r in received} == {MESSAGE.notification_id}
    assert len(push.refusals) == 1 and "cannot decrypt" in push.refusals[0]
    assert push.connections == 1


# RFC 8291 Appendix A: the receiver's keys and secret, the sender's key and salt, and the message.
RFC_RECEIVER_PRIVATE = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"
RFC_RECEIVER_PUBLIC = (
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
)
RFC_AUTH = "BTBZMqHH6r4Tts7J_aSIgg"
RFC_SENDER_PRIVATE = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
RFC_SALT = "DGv6ra1nlYgDCS1FRnbzlw"
RFC_BODY = (
    "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6Tlz"
    "AC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
)


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _private(text: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(_unb64(text), "big"), ec.SECP256R1())


def test_encryption_gives_rfc_8291_s_example_byte_for_byte():
    body = webpush_module.encrypt(
        b"When I grow up, I want to be a watermelon",
        RFC_RECEIVER_PUBLIC,
        RFC_AUTH,
        sender_key=_private(RFC_SENDER_PRIVATE),
        salt=_unb64(RFC_SALT),
    )
    assert body == _unb64(RFC_BODY)
    receiver = _private(RFC_RECEIVER_PRIVATE)
    assert http_ece.decrypt(
        body, private_key=receiver, auth_secret=_unb64(RFC_AUTH), version="aes128gcm"
    ) == (b"When I grow up, I want to be a watermelon")


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=MAX_PAYLOAD_BYTES), auth=st.binary(min_size=16, max_size=16))
def test_every_payload_decrypts_with_the_reference_library_and_fits_4096_bytes(payload, auth):
    receiver = ec.generate_private_key(ec.SECP256R1())
    point = receiver.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    b64 = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()  # noqa: E731

    body = webpush_module.encrypt(payload, b64(point), b64(auth))

    assert http_ece.decrypt(body, private_key=receiver, auth_secret=auth, version="aes128gcm") == payload
    assert len(body) == len(payload) + 86 + 1 + 16 <= 4096
    # A new key and salt for every message: the same payload never encrypts the same way twice.
    assert body[:16] != webpush_module.encrypt(payload, b64(point), b64(auth))[:16]


@pytest.mark.parametrize(
    ("p256dh", "auth"),
    [
        ("BAAA" + "A" * 83, RFC_AUTH),  # 65 bytes, but not a point on P-256
        (RFC_RECEIVER_PUBLIC[:-4], RFC_AUTH),  # too short
        (RFC_RECEIVER_PUBLIC, "BTBZMqHH6r4Tts7J_aSI"),  # auth of 15 bytes
        (RFC_RECEIVER_PUBLIC, "not base64 at all!"),
    ],
)
def test_keys_that_are_not_a_subscription_s_are_a_value_error(p256dh, auth):
    with pytest.raises(ValueError):
        webpush_module.encrypt(b"x", p256dh, auth)


def test_the_vapid_key_is_created_once_and_kept(key_file):
    assert not os.path.exists(key_file)
    public_key = vapid_public_key(key_file)

    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    point = base64.urlsafe_b64decode(public_key + "=" * (-len(public_key) % 4))
    assert len(point) == 65 and point[0] == 4
    assert (
        run_python(
            f"from actors.providers.webpush import vapid_public_key; print(vapid_public_key({key_file!r}))"
        ).stdout.strip()
        == public_key
    )


def test_processes_starting_at_once_all_use_the_one_key_that_won(key_file):
    code = f"from actors.providers.webpush import vapid_public_key; print(vapid_public_key({key_file!r}))"
    processes = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    keys = {process.communicate(timeout=60)[0].strip() for process in processes}

    assert len(keys) == 1 and keys != {""}
    assert keys == {vapid_public_key(key_file)}
    assert os.listdir(os.path.dirname(key_file)) == [os.path.basename(key_file)]  # no temporary file left


def test_a_process_that_lost_the_race_reads_the_winner_s_key(key_file):
    winner = vapid_public_key(key_file)
    with open(key_file, "rb") as file:
        written = file.read()

    # What a process that found no file, made its own key and then could not link it in returns.
    assert webpush_module._create_key_file(key_file) == written
    assert vapid_public_key(key_file) == winner


def test_a_key_file_that_is_not_a_p256_key_is_not_configured(tmp_path):
    bad = tmp_path / "vapid.pem"
    bad.write_text("not a key")
    with pytest.raises(NotConfigured, match="VAPID_PRIVATE_KEY_FILE"):
        load_vapid_key(str(bad))
    other_curve = tmp_path / "p384.pem"
    other_curve.write_bytes(
        ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(NotConfigured, match="not an EC P-256 key"):
        load_vapid_key(str(other_curve))


# --- FCM HTTP v1 -----------------------------------------------------------------------------------


@pytest.fixture
def fcm_service():
    with FcmService() as service:
        yield service


@pytest.fixture
def fcm(fcm_service):
    sender = FcmSender(
        credentials_file=fcm_service.service_account("demo-project"), url=fcm_service.origin, timeout=5
    )
    yield sender
    sender.close()


FCM_DEVICE = Device("dev-fcm", "fcm", "fcm-registration-token-1")


def test_fcm_sends_the_documented_message_and_returns_its_name(fcm_service, fcm):
    name = fcm.send(FCM_DEVICE, MESSAGE)

    [received] = fcm_service.wait_for(1)
    assert fcm_service.refusals == []
    assert name == received.name and name.startswith("projects/demo-project/messages/")
    assert received.project == "demo-project"
    assert received.message == {
        "token": "fcm-registration-token-1",
        "notification": {"title": "Order 1234", "body": "Your order has shipped"},
        "data": {
            "notification_id": MESSAGE.notification_id,
            "order": "1234",
            "tags": '["a", "b"]',
            "url": "https://shop.example/o/1234",
        },
        "android": {"ttl": "600s", "priority": "high", "collapse_key": "order-1234"},
    }


def test_fcm_without_title_or_data_and_at_normal_priority(fcm_service, fcm):
    fcm.send(FCM_DEVICE, PLAIN)

    [received] = fcm_service.wait_for(1)
    assert received.message["notification"] == {"body": "No title, no data"}
    assert received.message["data"] == {"notification_id": "n-plain"}
    assert received.message["android"] == {"ttl": "0s", "priority": "normal"}


def test_one_oauth_token_serves_many_messages(fcm_service, fcm):
    for _ in range(5):
        fcm.send(FCM_DEVICE, MESSAGE)

    received = fcm_service.wait_for(5)
    assert fcm_service.tokens_issued == 1
    assert len({r.access_token for r in received}) == 1


def test_a_token_about_to_expire_is_refreshed_before_use():
    # Two minutes is inside google-auth's refresh margin: every send must find the token stale.
    with FcmService(token_lifetime=120) as service:
        sender = FcmSender(credentials_file=service.service_account(), url=service.origin)
        for _ in range(3):
            sender.send(FCM_DEVICE, MESSAGE)
        sender.close()

        assert service.tokens_issued == 3
        assert len({r.access_token for r in service.wait_for(3)}) == 3


def test_the_project_is_the_file_s_unless_set(fcm_service):
    sender = FcmSender(
        credentials_file=fcm_service.service_account("from-file"),
        project_id="overridden",
        url=fcm_service.origin,
    )
    sender.send(FCM_DEVICE, MESSAGE)
    sender.close()
    assert fcm_service.wait_for(1)[0].project == "overridden"

    with pytest.raises(NotConfigured, match="FCM_PROJECT_ID"):
        FcmSender(credentials_file=fcm_service.service_account(project_id=None), url=fcm_service.origin)


def test_an_unreadable_credentials_file_is_not_configured(tmp_path):
    (tmp_path / "sa.json").write_text('{"type": "service_account"}')
    with pytest.raises(NotConfigured, match="FCM_CREDENTIALS_FILE"):
        FcmSender(credentials_file=str(tmp_path / "sa.json"))


@pytest.mark.parametrize(
    ("status", "code", "field"),
    [
        (404, "UNREGISTERED", None),
        (403, "SENDER_ID_MISMATCH", None),
        (400, "INVALID_ARGUMENT", "message.token"),
    ],
)
def test_a_dead_fcm_token_is_device_gone(fcm_service, fcm, status, code, field):
    fcm_service.fail_next(status, code, field_violation=field)

    with pytest.raises(DeviceGone, match=f"HTTP {status} {code}"):
        fcm.send(FCM_DEVICE, MESSAGE)


def test_an_invalid_argument_not_about_the_token_fails_only_the_delivery(fcm_service, fcm):
    fcm_service.fail_next(400, "INVALID_ARGUMENT", field_violation="message.android.ttl")

    with pytest.raises(PermanentDeliveryError, match="HTTP 400 INVALID_ARGUMENT") as caught:
        fcm.send(FCM_DEVICE, MESSAGE)
    assert not isinstance(caught.value, DeviceGone)


@pytest.mark.parametrize(
    ("status", "code"), [(429, "QUOTA_EXCEEDED"), (503, "UNAVAILABLE"), (500, "INTERNAL")]
)
def test_fcm_overload_is_transient_with_its_retry_after(fcm_service, fcm, status, code):
    fcm_service.fail_next(status, code, retry_after="30")

    with pytest.raises(TransientDeliveryError, match=code) as caught:
        fcm.send(FCM_DEVICE, MESSAGE)
    assert caught.value.retry_after == 30


def test_fcm_refusing_our_credentials_is_transient_and_logged_as_an_error(fcm_service, fcm, caplog):
    fcm_service.fail_next(401, "THIRD_PARTY_AUTH_ERROR")

    with caplog.at_level(logging.ERROR, logger="actors.providers.fcm"), pytest.raises(TransientDeliveryError):
        fcm.send(FCM_DEVICE, MESSAGE)
    assert "credentials" in caplog.text and "THIRD_PARTY_AUTH_ERROR" in caplog.text


def test_a_token_endpoint_refusing_the_account_is_transient_and_logged(fcm_service, tmp_path, caplog):
    # An account whose key this token endpoint never saw, as after the key was deleted in the console.
    with FcmService() as other:
        info = json.loads(pathlib.Path(other.service_account()).read_text())
    info["token_uri"] = f"{fcm_service.origin}/token"
    (tmp_path / "sa.json").write_text(json.dumps(info))
    sender = FcmSender(credentials_file=str(tmp_path / "sa.json"), url=fcm_service.origin)

    with caplog.at_level(logging.ERROR, logger="actors.providers.fcm"), pytest.raises(TransientDeliveryError):
        sender.send(FCM_DEVICE, MESSAGE)
    sender.close()
    assert "FCM_CREDENTIALS_FILE" in caplog.text and "invalid_grant" in caplog.text
    assert fcm_service.tokens_issued == 0 and fcm_service.received == []


def test_reserved_data_keys_are_named_in_order():
    data = {
        "notification_id": 1,
        "ok": 2,
        "from": 3,
        "message_type": 4,
        "google.c.a": 5,
        "gcm_x": 6,
        "GoogleX": 7,
    }
    assert reserved_data_keys(data) == [
        "notification_id",
        "from",
        "message_type",
        "google.c.a",
        "gcm_x",
        "GoogleX",
    ]
    assert reserved_data_keys({"title": 1, "fromage": 2}) == []


# --- APNs ------------------------------------------------------------------------------------------


class Clock:
    """Time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def apns_service():
    with ApnsService(topic="com.example.app") as service:
        yield service


@pytest.fixture
def clock():
    return Clock()


def apns_sender(service: ApnsService, clock: Clock, **overrides) -> ApnsSender:
    options = {
        "key_file": service.provider_key("KEY1234567", "TEAM123456"),
        "key_id": "KEY1234567",
        "team_id": "TEAM123456",
        "topic": "com.example.app",
        "url": service.url,
        "sandbox_url": service.url,
        "ca_file": service.ca_file,
        "timeout": 5,
        "clock": clock,
        **overrides,
    }
    return ApnsSender(**options)


@pytest.fixture
def apns(apns_service, clock):
    sender = apns_sender(apns_service, clock)
    yield sender
    sender.close()


APNS_TOKEN = "a1" * 32
APNS_DEVICE = Device("dev-apns", "apns", APNS_TOKEN, environment="production")


def test_apns_sends_the_alert_with_its_headers_and_returns_the_apns_id(apns_service, apns, clock):
    apns_id = apns.send(APNS_DEVICE, MESSAGE)

    [received] = apns_service.wait_for(1)
    assert apns_service.refusals == []
    assert apns_id == received.apns_id
    assert received.device_token == APNS_TOKEN
    assert received.payload == {
        "aps": {"alert": {"title": "Order 1234", "body": "Your order has shipped"}},
        "notification_id": MESSAGE.notification_id,
        "data": MESSAGE.data,
    }
    headers = {
        name: received.headers.get(name)
        for name in ("apns-topic", "apns-push-type", "apns-priority", "apns-expiration", "apns-collapse-id")
    }
    assert headers == {
        "apns-topic": "com.example.app",
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-expiration": str(int(clock.now) + 600),
        "apns-collapse-id": "order-1234",
    }


def test_apns_low_urgency_is_priority_5_and_ttl_zero_is_expiration_zero(apns_service, apns):
    apns.send(APNS_DEVICE, PLAIN)

    [received] = apns_service.wait_for(1)
    assert (received.headers["apns-priority"], received.headers["apns-expiration"]) == ("5", "0")
    assert "apns-collapse-id" not in received.headers
    assert received.payload == {"aps": {"alert": {"body": "No title, no data"}}, "notification_id": "n-plain"}


def test_one_provider_token_and_one_connection_serve_many_notifications(apns_service, apns):
    for _ in range(5):
        apns.send(APNS_DEVICE, MESSAGE)

    assert len(apns_service.wait_for(5)) == 5
    assert len(apns_service.provider_tokens) == 1
    assert apns_service.connections == 1


def test_the_provider_token_is_renewed_after_40_minutes_not_sooner(apns_service, apns, clock):
    # Started 45 minutes ago, so that every token stays within the hour APNs accepts, none from the future.
    clock.now -= 45 * 60
    apns.send(APNS_DEVICE, MESSAGE)
    clock.now += 39 * 60
    apns.send(APNS_DEVICE, MESSAGE)
    assert len(apns_service.provider_tokens) == 1

    clock.now += 60
    apns.send(APNS_DEVICE, MESSAGE)
    assert len(apns_service.provider_tokens) == 2
    assert apns_service.connections == 1


def test_the_sandbox_environment_uses_the_sandbox_url(apns_service, clock):
    with ApnsService(topic="com.example.app") as production:
        sender = apns_sender(apns_service, clock, url=production.url)
        sender.send(Device("dev-s", "apns", APNS_TOKEN, environment="sandbox"), MESSAGE)
        sender.close()
        assert len(apns_service.wait_for(1)) == 1
        assert production.received == [] and production.connections == 0


def test_unregistered_is_device_gone_unless_the_device_registered_again_later(apns_service, apns):
    unregistered_at = dt.datetime(2025, 3, 1, 12, 0, 0)
    millis = int(unregistered_at.replace(tzinfo=dt.UTC).timestamp() * 1000)
    registered_before = Device(
        "dev-a", "apns", APNS_TOKEN, last_seen_at=unregistered_at - dt.timedelta(days=1)
    )
    registered_after = Device(
        "dev-b", "apns", APNS_TOKEN, last_seen_at=unregistered_at + dt.timedelta(minutes=1)
    )

    apns_service.answer_next(410, "Unregistered", timestamp=millis, times=2)
    with pytest.raises(DeviceGone, match="410 Unregistered"):
        apns.send(registered_before, MESSAGE)
    with pytest.raises(PermanentDeliveryError, match="registered again later") as caught:
        apns.send(registered_after, MESSAGE)
    assert not isinstance(caught.value, DeviceGone)


@pytest.mark.parametrize("reason", ["BadDeviceToken", "DeviceTokenNotForTopic"])
def test_a_bad_device_token_is_device_gone(apns_service, apns, reason):
    apns_service.answer_next(400, reason)

    with pytest.raises(DeviceGone, match=reason):
        apns.send(APNS_DEVICE, MESSAGE)


def test_another_400_fails_only_the_delivery(apns_service, apns):
    apns_service.answer_next(400, "BadCollapseId")

    with pytest.raises(PermanentDeliveryError, match="BadCollapseId") as caught:
        apns.send(APNS_DEVICE, MESSAGE)
    assert not isinstance(caught.value, DeviceGone)


def test_apns_refusing_the_provider_token_is_transient_and_logged_as_an_error(
    apns_service, clock, tmp_path, caplog
):
    # A key APNs does not know, as when APNS_KEY_ID names another key than APNS_KEY_FILE holds.
    stranger = tmp_path / "AuthKey_OTHER.p8"
    stranger.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    sender = apns_sender(apns_service, clock, key_file=str(stranger), key_id="OTHER12345")

    with (
        caplog.at_level(logging.ERROR, logger="actors.providers.apns"),
        pytest.raises(TransientDeliveryError, match="403 InvalidProviderToken"),
    ):
        sender.send(APNS_DEVICE, MESSAGE)
    sender.close()
    assert "APNS_KEY_FILE" in caplog.text
    assert apns_service.received == []


def test_apns_429_is_transient_with_its_retry_after(apns_service, apns):
    apns_service.answer_next(429, "TooManyRequests", retry_after="15")

    with pytest.raises(TransientDeliveryError, match="TooManyRequests") as caught:
        apns.send(APNS_DEVICE, MESSAGE)
    assert caught.value.retry_after == 15


def test_an_unreachable_apns_is_transient(apns_service, clock):
    sender = apns_sender(apns_service, clock)
    apns_service.stop()

    with pytest.raises(TransientDeliveryError, match="APNs"):
        sender.send(APNS_DEVICE, MESSAGE)
    sender.close()


def test_apns_payload_over_4096_bytes_fails_before_sending(apns_service, apns):
    with pytest.raises(PermanentDeliveryError, match="APNs takes at most 4096"):
        apns.send(APNS_DEVICE, PushMessage("n-big", "user-42", "x" * 4096))
    assert apns_service.connections == 0


# --- Choosing a sender from settings -------------------------------------------------------------


def test_senders_come_from_settings_and_name_what_is_missing(tmp_path):
    code = """
from actors.providers import NotConfigured, missing_settings, sender_for
print(*(missing_settings(kind) for kind in ("webpush", "unifiedpush", "fcm", "apns")))
print(sender_for("webpush") is sender_for("webpush"), sender_for("unifiedpush").kind)
for kind in ("fcm", "apns"):
    try:
        sender_for(kind)
    except NotConfigured as exc:
        print(exc)
"""
    result = run_python(code, VAPID_PRIVATE_KEY_FILE=str(tmp_path / "vapid.pem"))

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "[] [] ['FCM_CREDENTIALS_FILE'] ['APNS_KEY_FILE', 'APNS_KEY_ID', 'APNS_TEAM_ID', 'APNS_TOPIC']",
        "True unifiedpush",
        "fcm devices cannot be sent to: set FCM_CREDENTIALS_FILE",
        "apns devices cannot be sent to: set APNS_KEY_FILE, APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC",
    ]
    assert (tmp_path / "vapid.pem").exists()


def test_configured_senders_reach_their_services(fcm_service, apns_service):
    code = """
from actors.providers import Device, PushMessage, sender_for
message = PushMessage("n-1", "user-1", "hi")
print(sender_for("fcm").send(Device("d1", "fcm", "tok"), message).split("/")[1])
print(len(sender_for("apns").send(Device("d2", "apns", "ab" * 32), message)))
"""
    result = run_python(
        code,
        FCM_CREDENTIALS_FILE=fcm_service.service_account("settings-project"),
        FCM_URL=fcm_service.origin,
        APNS_KEY_FILE=apns_service.provider_key("KEYSETTING", "TEAMSETTNG"),
        APNS_KEY_ID="KEYSETTING",
        APNS_TEAM_ID="TEAMSETTNG",
        APNS_TOPIC="com.example.app",
        APNS_URL=apns_service.url,
        APNS_CA_FILE=apns_service.ca_file,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["settings-project", "36"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("VAPID_SUBJECT", "ops@example.com"),
        ("VAPID_SUBJECT", "http://example.com"),
        ("FCM_URL", "ftp://fcm.example"),
        ("APNS_URL", "http://api.push.apple.com"),
        ("FCM_CREDENTIALS_FILE", "/nonexistent/sa.json"),
        ("APNS_KEY_FILE", "/nonexistent/AuthKey.p8"),
        ("APNS_CA_FILE", "/nonexistent/ca.pem"),
    ],
)
def test_a_bad_push_setting_stops_start_up_naming_it(variable, value):
    result = run_python("import settings", **{variable: value})
    assert result.returncode != 0
    assert variable in result.stderr


def test_the_vapid_subject_defaults_to_the_sender_address():
    result = run_python("import settings; print(settings.VAPID_SUBJECT)", EMAIL_FROM="alerts@example.org")
    assert result.stdout.strip() == "mailto:alerts@example.org"
