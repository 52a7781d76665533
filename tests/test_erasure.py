"""Erasure (GDPR article 17): no table holds the recipient's id, address or content afterwards."""

from __future__ import annotations

import uuid

import pytest

import storage
from actors.delivery import deliver
from harness.factories import settle, take
from storage import events, models, queries


@pytest.fixture
def client(keyed_client):
    return keyed_client


def every_stored_text():
    """Every value of every row of every table, as text."""
    texts = []
    for table in storage.db.get_tables():
        cursor = storage.db.execute_sql(f'SELECT * FROM "{table}"')
        texts += [str(value) for row in cursor.fetchall() for value in row]
    return "\n".join(texts)


def send(client, channel, recipient_id, content, **body):
    response = client.post(
        f"/notifications/{channel}", json={"recipient_id": recipient_id, "content": content, **body}
    )
    assert response.status_code == 202, response.json
    return response.json["notification_id"]


def test_erasure_leaves_no_trace_in_any_table(client, recipient_id):
    address = f"{uuid.uuid4().hex[:10]}@example.com"
    secret = f"secret-content-{uuid.uuid4().hex}"
    client.put(
        f"/recipients/{recipient_id}",
        json={"email": address, "timezone": "Europe/Warsaw", "preferences": {"channels": {"push": True}}},
    )
    device_token = f"fcm-token-{uuid.uuid4().hex}"
    registered = client.post(
        f"/recipients/{recipient_id}/devices", json={"kind": "fcm", "token": device_token}
    )
    assert registered.status_code == 201, registered.json
    pending = send(client, "push", recipient_id, secret, title=f"{secret}-title", data={"k": secret})
    later = send(
        client,
        "email",
        recipient_id,
        secret,
        subject=f"{secret}-subject",
        scheduled_time="2035-01-01T12:00:00",
    )
    direct = send(client, "email", address, secret)
    delivered = send(client, "push", recipient_id, secret)
    settle(queries.get(delivered), status=models.DELIVERED)
    failed = send(client, "email", recipient_id, secret)
    settle(queries.get(failed), status=models.FAILED, last_error=f"SMTP 550 no such user {address}")
    events.record(failed, "failed", "worker-1", detail=f"SMTP 550 no such user {address}")
    assert secret in every_stored_text() and address in every_stored_text()
    assert device_token in every_stored_text()

    response = client.delete(f"/recipients/{recipient_id}")
    assert response.status_code == 204

    stored = every_stored_text()
    for trace in (recipient_id, address, secret, device_token):
        assert trace not in stored
    assert client.get(f"/recipients/{recipient_id}").status_code == 404
    assert client.get(f"/notifications?recipient_id={recipient_id}").json["count"] == 0
    assert client.get(f"/notifications?recipient_id={address}").json["count"] == 0
    # The rows and their statuses stay; what waited is cancelled.
    statuses = {nid: queries.get(nid).status for nid in (pending, later, direct, delivered, failed)}
    assert statuses == {
        pending: "Cancelled",
        later: "Cancelled",
        direct: "Cancelled",
        delivered: "Delivered",
        failed: "Failed",
    }
    assert queries.get(pending).last_error == "Recipient erased"
    assert [p for p in take() if p.notification_id in statuses] == []


def test_a_notification_already_queued_is_not_sent_after_erasure(client, recipient_id):
    nid = send(client, "push", recipient_id, "hello")
    (queued,) = [p for p in _taken_until(nid) if p.notification_id == nid]
    client.delete(f"/recipients/{recipient_id}")
    deliver({nid: queued.seq})
    assert queries.get(nid).status == "Cancelled"
    assert queries.get(nid).attempt_count == 0


def test_an_address_used_directly_is_erased_the_same_way(client):
    address = f"{uuid.uuid4().hex[:10]}@example.com"
    nid = send(client, "email", address, "your invoice")
    assert client.delete(f"/recipients/{address}").status_code == 204
    assert address not in every_stored_text()
    assert queries.get(nid).content == "[erased]"


def test_erasing_nobody_is_a_204(client, recipient_id):
    assert client.delete(f"/recipients/{recipient_id}").status_code == 204


def test_erasure_needs_the_key(client, recipient_id):
    client.put(f"/recipients/{recipient_id}", json={})
    assert (
        client.delete(f"/recipients/{recipient_id}", environ_base={"HTTP_X_API_KEY": ""}).status_code == 401
    )
    assert client.get(f"/recipients/{recipient_id}").status_code == 200


def _taken_until(notification_id):
    while taken := take():
        if any(p.notification_id == notification_id for p in taken):
            return taken
    raise AssertionError(f"{notification_id} was not due")
