"""Channel and category preferences: an opted-out notification is accepted and ends Cancelled, unsent."""

from __future__ import annotations

import pytest

import settings
import storage
from actors import providers
from actors.delivery import deliver
from harness.factories import make, take
from storage import queries

NO_MARKETING_EMAIL = {"categories": {"marketing": {"email": False}}}


@pytest.fixture
def client(keyed_client):
    return keyed_client


@pytest.fixture
def smtp(smtp_server, monkeypatch):
    monkeypatch.setattr(settings, "SMTP_URLS", (smtp_server.url,))
    monkeypatch.setattr(providers, "_providers", {})
    return smtp_server


def profile(client, recipient_id, preferences):
    body = {"email": "ada@example.com", "preferences": preferences}
    assert client.put(f"/recipients/{recipient_id}", json=body).status_code in (200, 201)


def send(client, channel, recipient_id, **body):
    response = client.post(
        f"/notifications/{channel}", json={"recipient_id": recipient_id, "content": "x", **body}
    )
    assert response.status_code == 202, response.json
    return client.get(f"/notifications/{response.json['notification_id']}").json


def deliver_due(notification_id):
    """What a worker does with the message a scheduler pass publishes for the notification."""
    while taken := take():
        mine = [p for p in taken if p.notification_id == notification_id]
        if mine:
            deliver({mine[0].notification_id: mine[0].seq})
            return queries.get(notification_id)
    raise AssertionError(f"{notification_id} was not due")


def test_a_channel_turned_off_is_accepted_and_cancelled_unsent(client, recipient_id):
    profile(client, recipient_id, {"channels": {"push": False}})
    shown = send(client, "push", recipient_id)
    assert shown["status"] == "Cancelled"
    assert shown["last_error"].startswith("Recipient opted out")
    assert send(client, "email", recipient_id)["status"] == "Pending"
    assert shown["id"] not in {p.notification_id for p in take()}


def test_a_category_turned_off_for_a_channel_holds_for_that_channel_only(client, recipient_id):
    profile(client, recipient_id, NO_MARKETING_EMAIL)
    cancelled = send(client, "email", recipient_id, category="marketing")
    assert cancelled["status"] == "Cancelled"
    assert cancelled["category"] == "marketing"
    assert cancelled["last_error"] == "Recipient opted out of marketing email"
    assert send(client, "push", recipient_id, category="marketing")["status"] == "Pending"
    assert send(client, "email", recipient_id, category="security")["status"] == "Pending"
    assert send(client, "email", recipient_id)["status"] == "Pending"


def test_unknown_categories_and_missing_preferences_are_allowed(client, recipient_id):
    profile(client, recipient_id, None)
    assert send(client, "email", recipient_id, category="news")["status"] == "Pending"
    assert send(client, "push", f"{recipient_id}-none", category="news")["status"] == "Pending"


def test_a_batch_accepts_all_and_cancels_the_opted_out(client, recipient_id):
    profile(client, recipient_id, NO_MARKETING_EMAIL)
    items = [
        {"channel": "email", "recipient_id": recipient_id, "content": "a", "category": "marketing"},
        {"channel": "push", "recipient_id": recipient_id, "content": "b", "category": "marketing"},
    ]
    response = client.post("/notifications/batch", json={"notifications": items})
    assert response.status_code == 202, response.json
    statuses = [client.get(f"/notifications/{n}").json["status"] for n in response.json["notification_ids"]]
    assert statuses == ["Cancelled", "Pending"]


@pytest.mark.parametrize("category", ["Marketing", "", "x" * 65, "a b", 7])
def test_a_bad_category_is_a_422_naming_it(client, category):
    for channel, recipient in (("push", "u1"), ("email", "a@example.com")):
        body = {"recipient_id": recipient, "content": "x", "category": category}
        response = client.post(f"/notifications/{channel}", json=body)
        assert response.status_code == 422
        assert "category" in response.json["errors"]["json"]


def test_an_opt_out_after_scheduling_holds_at_delivery(client, recipient_id, smtp):
    profile(client, recipient_id, None)
    accepted = send(client, "email", recipient_id, category="marketing")
    client.patch(f"/recipients/{recipient_id}", json={"preferences": NO_MARKETING_EMAIL})

    cancelled = deliver_due(accepted["id"])
    assert cancelled.status == "Cancelled"
    assert cancelled.last_error == "Recipient opted out of marketing email"
    assert cancelled.attempt_count == 0
    assert smtp.messages == []


def test_force_never_overrides_an_opt_out(client, recipient_id, smtp):
    profile(client, recipient_id, None)
    accepted = send(client, "email", recipient_id, scheduled_time="2035-01-01T12:00:00")
    client.patch(f"/recipients/{recipient_id}", json={"preferences": {"channels": {"email": False}}})
    assert client.post(f"/notifications/{accepted['id']}/force").status_code == 200

    # What the worker does with the message force published.
    deliver({accepted["id"]: queries.get(accepted["id"]).message_seq})
    assert queries.get(accepted["id"]).status == "Cancelled"
    assert smtp.messages == []
    # Cancelled at acceptance, there is nothing to force.
    opted_out = send(client, "email", recipient_id)
    assert client.post(f"/notifications/{opted_out['id']}/force").status_code == 409


def test_allowed_email_is_sent(client, recipient_id, smtp):
    profile(client, recipient_id, NO_MARKETING_EMAIL)
    accepted = send(client, "email", recipient_id, category="security")
    assert deliver_due(accepted["id"]).status == "Delivered"
    assert smtp.wait_for(1)[0].rcpt_tos == ["ada@example.com"]


def test_a_version_8_database_gains_the_recipients_and_the_category(database_url):
    database = storage.configure(database_url)
    n = make()
    with database.connection_context():
        # The database as version 8 left it: no recipients, notifications without a category.
        database.execute_sql("DROP TABLE recipient")
        database.execute_sql("ALTER TABLE notification DROP COLUMN category")
        database.execute_sql("DELETE FROM schema_version WHERE version > 8")
    storage.configure(database_url)
    assert queries.get(n.id).category is None
    assert "category" in {c.name for c in storage.db.get_columns("notification")}
    assert storage.db.table_exists("recipient")
