"""The devices API: registration and its checks (SSRF included), listing, removal, on both databases."""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import settings
import storage
from actors.providers.webpush import vapid_public_key
from api import create_app
from storage import devices
from storage.models import Device

APNS_TOKEN = "a1" * 32
FCM_TOKEN = "fcm-token:APA91b" + "x" * 140


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def p256dh() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return b64(key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))


def subscription(endpoint: str = "https://push.example.net/send/abc", **keys: str) -> dict:
    """What a browser's PushSubscription.toJSON() gives."""
    return {
        "endpoint": endpoint,
        "expirationTime": None,
        "keys": {"p256dh": p256dh(), "auth": b64(os.urandom(16)), **keys},
    }


def webpush(endpoint: str = "https://push.example.net/send/abc", **extra) -> dict:
    return {"kind": "webpush", "subscription": subscription(endpoint), **extra}


def make_app(database_url: str, **config):
    return create_app(
        {
            "TESTING": True,
            "DATABASE_URL": database_url,
            "RUN_WORKERS": False,
            # The literal addresses the tests' public-looking endpoints are checked against.
            "PUSH_ENDPOINT_ALLOWLIST": frozenset({"push.example.net", "127.0.0.1"}),
            **config,
        }
    )


@pytest.fixture
def client(database_url):
    app = make_app(database_url)
    yield app.test_client()
    storage.db.close()


@pytest.fixture
def sqlite_client(tmp_path):
    app = make_app(f"sqlite:///{tmp_path}/devices.db")
    yield app.test_client()
    storage.db.close()


def register(client, recipient: str, body: dict, status: int = 201) -> dict:
    response = client.post(f"/recipients/{recipient}/devices", json=body)
    assert response.status_code == status, response.json
    return response.json


def refused(client, body: dict, recipient: str = "ann") -> dict:
    response = client.post(f"/recipients/{recipient}/devices", json=body)
    assert response.status_code == 422, response.json
    assert client.get(f"/recipients/{recipient}/devices").json["count"] == 0, "nothing was stored"
    return response.json["errors"]["json"]


def test_a_new_device_is_201_and_shows_no_secret(client):
    sent = webpush(label="Firefox on laptop")
    device = register(client, "ann", sent)
    assert device.keys() == {
        "id", "recipient_id", "kind", "label", "active", "created_at", "last_seen_at", "last_success_at",
        "disabled_at", "disabled_reason", "endpoint",
    }  # fmt: skip
    assert (device["recipient_id"], device["kind"], device["label"], device["active"]) == (
        "ann",
        "webpush",
        "Firefox on laptop",
        True,
    )
    assert device["endpoint"] == sent["subscription"]["endpoint"]
    assert device["created_at"] == device["last_seen_at"]
    assert device["last_success_at"] is device["disabled_at"] is device["disabled_reason"] is None
    listed = client.get("/recipients/ann/devices").json
    assert listed == {"count": 1, "devices": [device]}
    for secret in sent["subscription"]["keys"].values():
        assert secret not in str(listed)


def test_each_kind_shows_its_own_fields(client):
    apns = register(client, "ann", {"kind": "apns", "token": APNS_TOKEN, "environment": "sandbox"})
    fcm = register(client, "ann", {"kind": "fcm", "token": FCM_TOKEN})
    unified = register(client, "ann", {**webpush("https://push.example.net/up/1"), "kind": "unifiedpush"})
    assert apns["environment"] == "sandbox" and "endpoint" not in apns and APNS_TOKEN not in str(apns)
    assert "environment" not in fcm and "endpoint" not in fcm and FCM_TOKEN not in str(fcm)
    assert unified["endpoint"] == "https://push.example.net/up/1" and "environment" not in unified
    default = register(client, "bob", {"kind": "apns", "token": "b2" * 40})
    assert default["environment"] == "production"
    kinds = [d["kind"] for d in client.get("/recipients/ann/devices").json["devices"]]
    assert kinds == ["apns", "fcm", "unifiedpush"]


def test_registering_again_is_200_the_same_device_seen_later(client):
    sent = webpush(label="Firefox")
    first = register(client, "ann", sent)
    again = register(client, "ann", {**sent, "label": None}, status=200)
    assert again["id"] == first["id"]
    assert again["created_at"] == first["created_at"]
    assert again["last_seen_at"] > first["last_seen_at"]
    assert again["label"] == "Firefox", "a label not given keeps the one it had"
    assert client.get("/recipients/ann/devices").json["count"] == 1


def test_a_token_in_another_case_is_the_same_apns_device(client):
    first = register(client, "ann", {"kind": "apns", "token": APNS_TOKEN.upper()})
    again = register(client, "ann", {"kind": "apns", "token": APNS_TOKEN}, status=200)
    assert again["id"] == first["id"]


def test_the_same_address_under_another_kind_is_another_device(client):
    fcm = register(client, "ann", {"kind": "fcm", "token": APNS_TOKEN})
    apns = register(client, "ann", {"kind": "apns", "token": APNS_TOKEN})
    assert fcm["id"] != apns["id"]


def test_registering_under_another_recipient_moves_the_device(client):
    sent = webpush()
    first = register(client, "ann", sent)
    moved = register(client, "bob", sent, status=200)
    assert (moved["id"], moved["recipient_id"]) == (first["id"], "bob")
    assert client.get("/recipients/ann/devices").json == {"count": 0, "devices": []}
    assert [d["id"] for d in client.get("/recipients/bob/devices").json["devices"]] == [first["id"]]


def test_registering_again_reactivates_a_disabled_device(client):
    sent = webpush()
    device = register(client, "ann", sent)
    assert devices.disable(device["id"], "410 Gone")
    disabled = client.get("/recipients/ann/devices").json["devices"][0]
    assert (disabled["active"], disabled["disabled_reason"]) == (False, "410 Gone")
    assert disabled["disabled_at"] is not None
    again = register(client, "ann", sent, status=200)
    assert (again["active"], again["disabled_at"], again["disabled_reason"]) == (True, None, None)


def test_disable_is_conditional_on_the_registration_the_push_service_spoke_of(client):
    device = register(client, "ann", webpush())
    (stored,) = devices.of_recipient("ann")
    register(client, "ann", {**webpush(), "label": "again"}, status=200)  # registered again since
    assert not devices.disable(device["id"], "Unregistered", seen=stored.last_seen_at)
    (now,) = devices.of_recipient("ann")
    assert now.active
    assert devices.disable(device["id"], "Unregistered", seen=now.last_seen_at)
    assert not devices.disable(device["id"], "Unregistered"), "disabled once"


def test_delete_removes_only_the_recipients_own_device(client):
    ann = register(client, "ann", webpush())
    bob = register(client, "bob", {"kind": "fcm", "token": FCM_TOKEN})
    response = client.delete(f"/recipients/ann/devices/{bob['id']}")
    assert response.status_code == 404
    assert bob["id"] in response.json["message"]
    assert client.delete(f"/recipients/ann/devices/{uuid.uuid4()}").status_code == 404
    response = client.delete(f"/recipients/ann/devices/{ann['id']}")
    assert (response.status_code, response.data) == (204, b"")
    assert client.get("/recipients/ann/devices").json["count"] == 0
    assert client.get("/recipients/bob/devices").json["count"] == 1
    assert client.delete(f"/recipients/ann/devices/{ann['id']}").status_code == 404


def test_a_recipient_needs_nothing_else_to_exist(client):
    assert client.get("/recipients/nobody-yet/devices").json == {"count": 0, "devices": []}


def test_a_recipient_id_with_a_slash_is_one_recipient(sqlite_client):
    device = register(sqlite_client, "tenant/ann", {"kind": "fcm", "token": FCM_TOKEN})
    assert device["recipient_id"] == "tenant/ann"
    assert sqlite_client.get("/recipients/tenant%2Fann/devices").json["count"] == 1
    assert sqlite_client.delete(f"/recipients/tenant/ann/devices/{device['id']}").status_code == 204


def test_a_blank_recipient_id_is_refused(sqlite_client):
    response = sqlite_client.post("/recipients/%20/devices", json={"kind": "fcm", "token": FCM_TOKEN})
    assert response.status_code == 422
    assert "recipient_id" in response.json["errors"]["path"]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"kind": "carrier-pigeon", "token": "x"}, ["kind"]),
        ({"token": "x"}, ["kind"]),
        ({"kind": "webpush"}, ["subscription"]),
        ({"kind": "fcm"}, ["token"]),
        ({"kind": "fcm", "token": ""}, ["token"]),
        ({"kind": "fcm", "token": "a b"}, ["token"]),
        ({"kind": "fcm", "token": "tab\tin"}, ["token"]),
        ({"kind": "fcm", "token": "x" * 4097}, ["token"]),
        ({"kind": "fcm", "token": FCM_TOKEN, "environment": "sandbox"}, ["environment"]),
        ({"kind": "fcm", "token": FCM_TOKEN, "subscription": subscription()}, ["subscription"]),
        ({"kind": "apns", "token": "a1" * 31}, ["token"]),
        ({"kind": "apns", "token": "a" * 201}, ["token"]),
        ({"kind": "apns", "token": "g1" * 32}, ["token"]),
        ({"kind": "apns", "token": APNS_TOKEN, "environment": "staging"}, ["environment"]),
        ({"kind": "webpush", "token": FCM_TOKEN}, ["token"]),
        ({**webpush(), "environment": "production"}, ["environment"]),
        ({**webpush(), "label": "x" * 101}, ["label"]),
        ({**webpush(), "label": "nul\x00"}, ["label"]),
        ({**webpush(), "extra": 1}, ["extra"]),
        ({"kind": "webpush", "subscription": "https://push.example.net/x"}, ["subscription"]),
        ({"kind": "webpush", "subscription": {"keys": subscription()["keys"]}}, ["subscription", "endpoint"]),
        ({"kind": "webpush", "subscription": {"endpoint": "https://a.example/"}}, ["subscription", "keys"]),
        (webpush("push.example.net/no-scheme"), ["subscription", "endpoint"]),
        (webpush("ftp://push.example.net/x"), ["subscription", "endpoint"]),
        (webpush("https:///no-host"), ["subscription", "endpoint"]),
        (webpush("https://user:pw@push.example.net/x"), ["subscription", "endpoint"]),
        (webpush("https://push.example.net/" + "x" * 2048), ["subscription", "endpoint"]),
    ],
)
def test_bad_input_is_a_422_naming_the_field(sqlite_client, body, path):
    errors = refused(sqlite_client, body)
    for name in path:
        assert name in errors, errors
        errors = errors[name]


def keys_with(**keys: str) -> dict:
    return {"kind": "webpush", "subscription": subscription(**keys)}


@pytest.mark.parametrize(
    ("keys", "field"),
    [
        ({"p256dh": "not base64!"}, "p256dh"),
        ({"p256dh": b64(b"\x04" + os.urandom(31))}, "p256dh"),  # 32 bytes
        ({"p256dh": b64(b"\x02" + os.urandom(64))}, "p256dh"),  # 65 bytes, not uncompressed
        ({"p256dh": b64(b"\x04" + bytes(64))}, "p256dh"),  # uncompressed, not on the curve
        ({"auth": b64(os.urandom(15))}, "auth"),
        ({"auth": b64(os.urandom(17))}, "auth"),
        ({"auth": "a"}, "auth"),
    ],
)
def test_subscription_keys_are_checked(sqlite_client, keys, field):
    errors = refused(sqlite_client, keys_with(**keys))
    assert list(errors["subscription"]["keys"]) == [field]


def test_padded_keys_and_an_expiration_time_are_accepted(sqlite_client):
    body = keys_with(auth=b64(os.urandom(16)) + "==")
    body["subscription"]["expirationTime"] = 1_900_000_000_000
    register(sqlite_client, "ann", body)


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://127.0.0.2/push",  # loopback
        "https://10.1.2.3/push",  # private
        "https://192.168.0.10/push",
        "https://169.254.169.254/latest/meta-data",  # link-local: the cloud metadata service
        "https://[::1]/push",
        "https://[::ffff:127.0.0.1]/push",  # IPv4 inside IPv6
        "https://0.0.0.0/push",
        "https://localhost/push",  # a name resolving to loopback
        "http://push.example.org/push",  # a public host, but not https
    ],
)
def test_endpoints_not_public_are_refused(tmp_path, endpoint):
    client = make_app(f"sqlite:///{tmp_path}/ssrf.db", PUSH_ENDPOINT_ALLOWLIST=frozenset()).test_client()
    errors = refused(client, webpush(endpoint))
    (message,) = errors["subscription"]["endpoint"]
    assert "public address" in message or "https://" in message


def test_the_allowlist_is_compared_with_the_host_as_written(tmp_path):
    client = make_app(
        f"sqlite:///{tmp_path}/allow.db", PUSH_ENDPOINT_ALLOWLIST=frozenset({"127.0.0.1"})
    ).test_client()
    register(client, "ann", webpush("http://127.0.0.1:8080/push/1"))  # listed: http too
    errors = refused(client, webpush("https://localhost:8080/push/1"), recipient="bob")
    assert "localhost" in errors["subscription"]["endpoint"][0], "localhost is not 127.0.0.1"
    client = make_app(
        f"sqlite:///{tmp_path}/allow-name.db", PUSH_ENDPOINT_ALLOWLIST=frozenset({"localhost"})
    ).test_client()
    register(client, "ann", webpush("http://localhost:8080/push/1"))
    refused(client, webpush("http://127.0.0.1:8080/push/1"), recipient="bob")


def test_every_devices_route_needs_a_key(tmp_path):
    client = make_app(f"sqlite:///{tmp_path}/keys.db", API_KEYS=("the-key-0123456789",)).test_client()
    routes = [
        ("post", "/recipients/ann/devices"),
        ("get", "/recipients/ann/devices"),
        ("delete", f"/recipients/ann/devices/{uuid.uuid4()}"),
        ("get", "/push/webpush-key"),
    ]
    for method, path in routes:
        response = getattr(client, method)(path, json={"kind": "fcm", "token": FCM_TOKEN})
        assert response.status_code == 401, (method, path)
    headers = {"Authorization": "Bearer the-key-0123456789"}
    body = {"kind": "fcm", "token": FCM_TOKEN}
    assert client.post("/recipients/ann/devices", json=body, headers=headers).status_code == 201
    assert client.get("/recipients/ann/devices", headers=headers).json["count"] == 1


def test_the_devices_routes_are_in_the_openapi_spec(sqlite_client):
    paths = sqlite_client.get("/openapi.json").json["paths"]
    devices_path = paths["/recipients/{recipient_id}/devices"]
    assert devices_path["post"]["summary"] == "Register a device of the recipient"
    assert {"200", "201", "422"} <= devices_path["post"]["responses"].keys()
    assert devices_path["get"]["summary"] == "List the recipient's devices, active and disabled"
    one = paths["/recipients/{recipient_id}/devices/{device_id}"]["delete"]
    assert {"204", "404"} <= one["responses"].keys()
    assert paths["/push/webpush-key"]["get"]["summary"] == "The VAPID public key browsers subscribe with"


def test_storage_registers_lists_and_deletes_the_same_on_both_databases(db):
    first, created = devices.register("ann", kind="fcm", address=FCM_TOKEN, label="phone")
    assert created
    again, created = devices.register("bob", kind="fcm", address=FCM_TOKEN)
    assert not created and again.id == first.id and again.recipient_id == "bob" and again.label == "phone"
    long_token = "t" * 4096  # longer than a PostgreSQL index entry may be: the index holds its digest
    long, created = devices.register("bob", kind="fcm", address=long_token)
    assert created and devices.register("bob", kind="fcm", address=long_token)[0].id == long.id
    assert [d.id for d in devices.of_recipient("bob")] == [first.id, long.id]
    active = devices.active_of(["ann", "bob"])
    assert {r: [d.id for d in found] for r, found in active.items()} == {"bob": [str(first.id), str(long.id)]}
    oldest = active["bob"][0]
    assert oldest == devices.by_id([first.id])[str(first.id)]
    assert (oldest.kind, oldest.address, oldest.active) == ("fcm", FCM_TOKEN, True)
    devices.succeeded([first.id], dt.datetime(2030, 1, 1))
    assert Device.get_by_id(first.id).last_success_at == dt.datetime(2030, 1, 1)
    with pytest.raises(devices.DeviceNotFound):
        devices.delete("ann", first.id)
    devices.delete("bob", first.id)
    assert devices.by_id([first.id]) == {}


def test_the_dashboard_shows_a_recipients_devices_and_why_one_is_disabled(sqlite_client):
    active = register(sqlite_client, "ann", webpush(label="Firefox on laptop"))
    gone = register(sqlite_client, "ann", {"kind": "fcm", "token": FCM_TOKEN, "label": "Pixel"})
    devices.disable(gone["id"], "FCM: HTTP 404 UNREGISTERED: Requested entity was not found.")
    nid = sqlite_client.post("/notifications/push", json={"recipient_id": "ann", "content": "hi"}).json[
        "notification_id"
    ]
    html = sqlite_client.get("/dashboard/recipients/ann").text
    rows = dict(re.findall(r'<tr data-device="([^"]+)">(.*?)</tr>', html, re.S))
    assert "Firefox on laptop" in rows[active["id"]] and ">active<" in rows[active["id"]]
    assert ">disabled<" in rows[gone["id"]] and "404 UNREGISTERED" in rows[gone["id"]]
    assert nid[:8] in html, "and the recipient's notifications"
    page = sqlite_client.get(f"/dashboard/notifications/{nid}").text
    assert 'href="/dashboard/recipients/ann"' in page
    assert "No devices" in sqlite_client.get("/dashboard/recipients/nobody").text


def test_the_webpush_key_is_the_vapid_key_the_senders_sign_with(sqlite_client):
    public_key = sqlite_client.get("/push/webpush-key").json["public_key"]
    raw = base64.urlsafe_b64decode(public_key + "=")
    assert len(raw) == 65 and raw[0] == 0x04
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)  # a point on P-256
    assert public_key == vapid_public_key(settings.VAPID_PRIVATE_KEY_FILE)
    assert sqlite_client.get("/push/webpush-key").json["public_key"] == public_key, "the same key each time"
