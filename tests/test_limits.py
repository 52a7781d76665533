"""Limits on everything a client sends: body size, JSON depth, text, recipients, `data`, subject lines."""

from __future__ import annotations

import json

import pytest

from actors.providers import Envelope
from actors.providers.smtp import SmtpProvider
from api import create_app
from storage import models, queries

PUSH = {"recipient_id": "user123", "content": "hello"}


def nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"next": value}
    return value


def test_a_body_over_the_limit_is_a_413_in_the_usual_error_format(app, client):
    body = json.dumps({**PUSH, "content": "x" * (app.config["MAX_CONTENT_LENGTH"] + 1)})
    response = client.post("/notifications/push", data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.json["code"] == 413
    assert response.json["status"] == "Request Entity Too Large"


def test_json_nested_beyond_what_python_can_parse_is_a_400_not_a_500(client):
    body = '{"recipient_id": "u", "content": "x", "data": ' + "[" * 50_000 + "]" * 50_000 + "}"
    response = client.post("/notifications/push", data=body, content_type="application/json")
    assert response.status_code == 400
    assert "json" in response.json["errors"]


def test_data_at_the_limits_is_accepted(client):
    assert client.post("/notifications/push", json={**PUSH, "data": nested(5)}).status_code == 202
    fits = {"k": "x" * (4096 - len('{"k":""}'))}
    assert client.post("/notifications/push", json={**PUSH, "data": fits}).status_code == 202


def test_the_documented_data_limits_are_the_configured_ones_it_enforces(tmp_path):
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path}/api.db",
            "RUN_WORKERS": False,
            "MAX_DATA_BYTES": 100,
            "MAX_DATA_DEPTH": 2,
        }
    )
    client = app.test_client()
    data = client.get("/openapi.json").json["components"]["schemas"]["PushRequest"]["properties"]["data"]
    assert data["description"] == "a JSON object of at most 100 bytes, nested at most 2 levels"
    over = {"k": "x" * (101 - len('{"k":""}'))}
    assert client.post("/notifications/push", json={**PUSH, "data": over}).status_code == 422
    assert client.post("/notifications/push", json={**PUSH, "data": nested(3)}).status_code == 422
    assert client.post("/notifications/push", json={**PUSH, "data": {"k": "x"}}).status_code == 202


@pytest.mark.parametrize(
    "data",
    [nested(6), {"list": [[[[[["too deep"]]]]]]}, {"k": "x" * 4096}, {"k": "é" * 2100}],
    ids=["object-depth", "array-depth", "ascii-size", "utf8-size"],
)
def test_data_too_deep_or_too_large_is_a_422_naming_data(app, client, data):
    response = client.post("/notifications/push", json={**PUSH, "data": data})
    assert response.status_code == 422
    assert "data" in response.json["errors"]["json"]
    with app.app_context():
        assert models.Notification.select().count() == 0


@pytest.mark.parametrize(
    ("channel", "fields", "field"),
    [
        ("push", {"recipient_id": "user\n123"}, "recipient_id"),
        ("push", {"recipient_id": "user\x1b[31m"}, "recipient_id"),
        ("push", {"recipient_id": "user\u2028x"}, "recipient_id"),
        ("push", {"recipient_id": "u" * 256}, "recipient_id"),
        ("push", {"content": "nul\x00byte"}, "content"),
        ("push", {"content": "lone \ud800 surrogate"}, "content"),
        ("push", {"title": "nul\x00"}, "title"),
        ("email", {"recipient_id": "a\r\nbcc@example.com"}, "recipient_id"),
        ("email", {"recipient_id": "a" * 243 + "@example.com"}, "recipient_id"),
        ("email", {"recipient_id": "a@example.com, b@example.com"}, "recipient_id"),
        ("email", {"recipient_id": "a@example.com", "subject": "x\x00"}, "subject"),
    ],
)
def test_bad_text_and_recipients_are_a_422_naming_the_field(app, client, channel, fields, field):
    body = {**PUSH, **fields} if channel == "push" else {"content": "x", **fields}
    response = client.post(f"/notifications/{channel}", json=body)
    assert response.status_code == 422
    assert field in response.json["errors"]["json"]
    with app.app_context():
        assert models.Notification.select().count() == 0


def test_a_nul_in_a_list_filter_is_a_422(client):
    response = client.get("/notifications?recipient_id=a%00b")
    assert response.status_code == 422
    assert "recipient_id" in response.json["errors"]["query"]


def test_a_printable_unicode_recipient_is_accepted(client):
    assert (
        client.post("/notifications/push", json={**PUSH, "recipient_id": "Zoë Łódź 名前"}).status_code == 202
    )


def test_a_subject_cannot_add_headers_to_the_smtp_conversation(app, client, smtp_server):
    injected = "Invoice\r\nBcc: victim@example.org\r\n\r\nforged body"
    response = client.post(
        "/notifications/email", json={"recipient_id": "user@example.com", "content": "x", "subject": injected}
    )
    assert response.status_code == 202
    with app.app_context():
        stored = queries.get(response.json["notification_id"])
    assert stored.subject == "Invoice Bcc: victim@example.org forged body"
    provider = SmtpProvider(smtp_server.url, "notifications@localhost", timeout=5)
    provider.deliver(Envelope(str(stored.id), "email", stored.recipient_id, stored.content, stored.subject))
    # Whatever reaches the provider by another way is folded again as it goes onto the wire.
    provider.deliver(Envelope(str(stored.id), "email", stored.recipient_id, stored.content, injected))
    for recipients, message in ((m.rcpt_tos, m.message) for m in smtp_server.messages):
        assert recipients == ["user@example.com"]
        assert message["Bcc"] is None
        assert message.get_all("Subject") == ["Invoice Bcc: victim@example.org forged body"]
        assert message.get_payload().strip() == "x"
    assert len(smtp_server.messages) == 2
