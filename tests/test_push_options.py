"""A push notification's TTL, urgency and collapse key: checked, stored, shown, on both databases."""

from __future__ import annotations

import pytest

import storage
from api import create_app
from storage import models

PUSH = {"recipient_id": "ann", "content": "Your order has shipped"}


@pytest.fixture
def client(database_url):
    app = create_app({"TESTING": True, "DATABASE_URL": database_url, "RUN_WORKERS": False})
    yield app.test_client()
    storage.db.close()


def accept(client, **body) -> dict:
    response = client.post("/notifications/push", json={**PUSH, **body})
    assert response.status_code == 202, response.json
    return client.get(f"/notifications/{response.json['notification_id']}").json


def test_a_push_notification_has_the_defaults(client):
    shown = accept(client)
    assert (shown["ttl"], shown["urgency"], shown["collapse_key"]) == (86400, "normal", None)


def test_the_options_given_are_stored_and_shown(client):
    shown = accept(client, ttl=0, urgency="very-low", collapse_key="order-42_B")
    assert (shown["ttl"], shown["urgency"], shown["collapse_key"]) == (0, "very-low", "order-42_B")
    assert accept(client, ttl=2419200, urgency="high")["ttl"] == 2419200


def test_a_batch_stores_each_items_options(client):
    items = [
        {"channel": "push", **PUSH, "ttl": 60, "urgency": "low", "collapse_key": "a"},
        {"channel": "push", **PUSH},
        {"channel": "email", "recipient_id": "ann@example.com", "content": "Invoice"},
    ]
    response = client.post("/notifications/batch", json={"notifications": items})
    assert response.status_code == 202, response.json
    shown = [client.get(f"/notifications/{nid}").json for nid in response.json["notification_ids"]]
    assert [(n["ttl"], n["urgency"], n["collapse_key"]) for n in shown] == [
        (60, "low", "a"),
        (86400, "normal", None),
        (None, None, None),
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ttl", -1),
        ("ttl", 2419201),
        ("ttl", 1.5),
        ("ttl", "60"),
        ("ttl", True),
        ("urgency", "urgent"),
        ("urgency", "High"),
        ("collapse_key", ""),
        ("collapse_key", "k" * 33),
        ("collapse_key", "not/base64url"),
        ("collapse_key", "padded=="),
        ("collapse_key", 7),
    ],
)
def test_bad_options_are_a_422_naming_the_field(client, field, value):
    response = client.post("/notifications/push", json={**PUSH, field: value})
    assert response.status_code == 422
    assert list(response.json["errors"]["json"]) == [field]
    assert models.Notification.select().count() == 0


def test_email_takes_no_push_options(client):
    response = client.post(
        "/notifications/email", json={"recipient_id": "ann@example.com", "content": "x", "ttl": 60}
    )
    assert response.status_code == 422
    assert "ttl" in response.json["errors"]["json"]


def test_a_version_8_database_gains_the_options_devices_and_deliveries(database_url):
    database = storage.configure(database_url)
    with database.connection_context():
        # The database as version 8 left it.
        database.execute_sql("DROP TABLE delivery")
        database.execute_sql("DROP TABLE device")
        for column in ("ttl", "urgency", "collapse_key"):
            database.execute_sql(f"ALTER TABLE notification DROP COLUMN {column}")
        database.execute_sql("DELETE FROM schema_version WHERE version > 8")
    database = storage.configure(database_url)
    with database.connection_context():
        columns = {c.name for c in database.get_columns("notification")}
        assert {"ttl", "urgency", "collapse_key"} <= columns
        assert database.table_exists("device") and database.table_exists("delivery")


@pytest.mark.parametrize("key", ["notification_id", "from", "message_type", "google.c.a.e", "GCM.n", "gcm"])
def test_data_keys_fcm_reserves_are_a_422_naming_the_key(client, key):
    data = {"order": 7, key: "x"}
    single = client.post("/notifications/push", json={**PUSH, "data": data})
    assert single.status_code == 422
    assert single.json["errors"]["json"] == {"data": {key: ["Reserved by FCM; use another key."]}}
    batch = client.post(
        "/notifications/batch", json={"notifications": [{"channel": "push", **PUSH, "data": data}]}
    )
    assert batch.json["errors"]["json"] == {"notifications": {"0": single.json["errors"]["json"]}}
    assert models.Notification.select().count() == 0


def test_data_keys_like_the_reserved_ones_are_taken(client):
    assert (
        accept(client, data={"notification": 1, "sender_from": 2, "my_google": 3})["data"]["my_google"] == 3
    )
