"""How a recipient's profile changes sending: the timezone used, the address an email goes to."""

from __future__ import annotations

import pytest

import settings
from actors import providers
from actors.delivery import deliver
from harness.factories import take
from storage import queries


@pytest.fixture
def client(keyed_client):
    return keyed_client


@pytest.fixture
def smtp(smtp_server, monkeypatch):
    """Email delivered to a real local SMTP server, through a provider made for this test."""
    monkeypatch.setattr(settings, "SMTP_URLS", (smtp_server.url,))
    monkeypatch.setattr(providers, "_providers", {})
    return smtp_server


def accept(client, channel, **body):
    response = client.post(f"/notifications/{channel}", json={"content": "hello", **body})
    assert response.status_code == 202, response.json
    return client.get(f"/notifications/{response.json['notification_id']}").json


def deliver_due(notification_id):
    """What a worker does with the message a scheduler pass publishes for the notification."""
    # Other tests' rows may be due in the run's PostgreSQL database: pass until ours is taken.
    while taken := take():
        mine = [p for p in taken if p.notification_id == notification_id]
        if mine:
            deliver({mine[0].notification_id: mine[0].seq})
            return queries.get(notification_id)
    raise AssertionError(f"{notification_id} was not due")


def test_the_timezone_is_the_requests_else_the_recipients_else_the_default(client, recipient_id):
    client.put(f"/recipients/{recipient_id}", json={"timezone": "Asia/Tokyo"})
    assert accept(client, "push", recipient_id=recipient_id)["timezone"] == "Asia/Tokyo"
    given = accept(client, "push", recipient_id=recipient_id, timezone="Europe/Warsaw")
    assert given["timezone"] == "Europe/Warsaw"
    assert accept(client, "push", recipient_id=f"{recipient_id}-none")["timezone"] == "UTC"
    client.put(f"/recipients/{recipient_id}-bare", json={})
    assert accept(client, "push", recipient_id=f"{recipient_id}-bare")["timezone"] == "UTC"


def test_a_local_time_is_read_in_the_recipients_timezone(client, recipient_id):
    client.put(f"/recipients/{recipient_id}", json={"timezone": "America/New_York"})
    body = accept(client, "push", recipient_id=recipient_id, scheduled_time="2030-12-01T15:30:00")
    assert body["scheduled_time"] == "2030-12-01T20:30:00+00:00"
    assert body["local_scheduled_time"] == "2030-12-01T15:30:00-05:00"


def test_a_batch_takes_each_recipients_timezone(client, recipient_id):
    client.put(f"/recipients/{recipient_id}", json={"timezone": "Asia/Tokyo"})
    items = [
        {"channel": "push", "recipient_id": recipient_id, "content": "a"},
        {"channel": "push", "recipient_id": f"{recipient_id}-none", "content": "b"},
        {"channel": "push", "recipient_id": recipient_id, "content": "c", "timezone": "Europe/Warsaw"},
    ]
    response = client.post("/notifications/batch", json={"notifications": items})
    assert response.status_code == 202, response.json
    zones = [
        client.get(f"/notifications/{nid}").json["timezone"] for nid in response.json["notification_ids"]
    ]
    assert zones == ["Asia/Tokyo", "UTC", "Europe/Warsaw"]


def test_an_email_may_name_a_recipient_with_an_address(client, recipient_id):
    client.put(f"/recipients/{recipient_id}", json={"email": "ada@example.com"})
    assert accept(client, "email", recipient_id=recipient_id)["recipient_id"] == recipient_id


@pytest.mark.parametrize("profile", [None, {}, {"email": None, "timezone": "UTC"}])
def test_an_email_to_a_recipient_without_an_address_is_a_422_naming_recipient_id(
    client, recipient_id, profile
):
    if profile is not None:
        client.put(f"/recipients/{recipient_id}", json=profile)
    response = client.post("/notifications/email", json={"recipient_id": recipient_id, "content": "x"})
    assert response.status_code == 422
    assert "recipient_id" in response.json["errors"]["json"]
    items = [
        {"channel": "push", "recipient_id": recipient_id, "content": "x"},
        {"channel": "email", "recipient_id": recipient_id, "content": "x"},
    ]
    batch = client.post("/notifications/batch", json={"notifications": items})
    assert batch.status_code == 422
    assert list(batch.json["errors"]["json"]["notifications"]) == ["1"]
    assert "recipient_id" in batch.json["errors"]["json"]["notifications"]["1"]
    assert client.get(f"/notifications?recipient_id={recipient_id}").json["count"] == 0


def test_an_email_goes_to_the_address_the_profile_has_when_it_is_sent(client, recipient_id, smtp):
    client.put(f"/recipients/{recipient_id}", json={"email": "old@example.com"})
    notification = accept(client, "email", recipient_id=recipient_id, subject="Hi")
    client.patch(f"/recipients/{recipient_id}", json={"email": "new@example.com"})

    assert deliver_due(notification["id"]).status == "Delivered"
    (received,) = smtp.wait_for(1)
    assert received.rcpt_tos == ["new@example.com"]
    assert received.message["To"] == "new@example.com"


def test_an_email_whose_recipient_lost_its_address_fails_without_sending(client, recipient_id, smtp):
    client.put(f"/recipients/{recipient_id}", json={"email": "ada@example.com"})
    notification = accept(client, "email", recipient_id=recipient_id)
    client.patch(f"/recipients/{recipient_id}", json={"email": None})

    failed = deliver_due(notification["id"])
    assert failed.status == "Failed"
    assert "invalid email recipient" in failed.last_error
    assert smtp.messages == []


def test_an_email_to_an_address_goes_to_it(client, smtp):
    notification = accept(client, "email", recipient_id="grace@example.com")
    assert deliver_due(notification["id"]).status == "Delivered"
    assert smtp.wait_for(1)[0].rcpt_tos == ["grace@example.com"]


def test_a_templates_locale_is_the_requests_else_the_recipients(client, recipient_id):
    template = {
        "channel": "push",
        "default_locale": "en",
        "locales": {"en": {"text": "Hello"}, "pl": {"text": "Cześć"}},
    }
    name = f"greeting-{recipient_id}"
    assert client.put(f"/templates/{name}", json=template).status_code in (200, 201)
    client.put(f"/recipients/{recipient_id}", json={"locale": "pl-PL"})

    def sent(**body):
        response = client.post(
            "/notifications/push", json={"recipient_id": recipient_id, "template": name, **body}
        )
        assert response.status_code == 202, response.json
        return client.get(f"/notifications/{response.json['notification_id']}").json

    assert (sent()["locale"], sent()["content"]) == ("pl", "Cześć")
    assert sent(locale="en")["content"] == "Hello"
