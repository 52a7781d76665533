"""Idempotency-Key: a retry gets the original response and creates nothing new, even when concurrent."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from api import auth, create_app
from api import idempotency as idempotent_api
from storage import idempotency, models
from storage.clock import utcnow

KEYS = ("key-one-0123456789", "key-two-0123456789")
PUSH = {"recipient_id": "user123", "content": "Your order has been shipped!"}


@pytest.fixture
def app(database_url):
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": database_url,
            "RUN_WORKERS": False,
            "API_KEYS": KEYS,
            "IDEMPOTENCY_WAIT": 0.2,
        }
    )
    with app.app_context():
        idempotency.IdempotentRequest.delete().execute()
    return app


@pytest.fixture
def client(app):
    return app.test_client()


def post(client, path, body=None, key="retry-1", api_key=KEYS[0]):
    headers = {"X-API-Key": api_key} | ({"Idempotency-Key": key} if key is not None else {})
    return client.post(path, json=body, headers=headers)


def count(app):
    with app.app_context():
        return models.Notification.select().count()


def test_a_retry_gets_the_original_response_and_creates_nothing(app, client):
    first = post(client, "/notifications/push", PUSH)
    again = post(client, "/notifications/push", {"content": PUSH["content"], "recipient_id": "user123"})
    assert first.status_code == again.status_code == 202
    assert again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count(app) == 1


def test_the_same_key_with_another_body_is_a_422_naming_the_header(app, client):
    post(client, "/notifications/push", PUSH)
    response = post(client, "/notifications/push", {**PUSH, "content": "something else"})
    assert response.status_code == 422
    assert "Idempotency-Key" in response.json["errors"]["headers"]
    other_endpoint = post(client, "/notifications/email", {"recipient_id": "a@example.com", "content": "x"})
    assert other_endpoint.status_code == 422
    assert count(app) == 1


def test_keys_are_per_api_key(app, client):
    post(client, "/notifications/push", PUSH, api_key=KEYS[0])
    assert post(client, "/notifications/push", PUSH, api_key=KEYS[1]).status_code == 202
    assert count(app) == 2


def test_without_a_key_every_request_is_new(app, client):
    post(client, "/notifications/push", PUSH, key=None)
    post(client, "/notifications/push", PUSH, key=None)
    assert count(app) == 2


def test_a_retried_cancel_repeats_its_success_instead_of_a_conflict(client):
    nid = post(client, "/notifications/push", {**PUSH, "scheduled_time": "2030-01-01T12:00:00"}).json[
        "notification_id"
    ]
    first = post(client, f"/notifications/{nid}/cancel", key="cancel-1")
    again = post(client, f"/notifications/{nid}/cancel", key="cancel-1")
    assert first.status_code == again.status_code == 200
    assert again.json == first.json
    assert post(client, f"/notifications/{nid}/cancel", key="cancel-2").status_code == 409


def test_a_request_that_failed_gives_its_key_up(app, client):
    assert post(client, "/notifications/push", {"content": "no recipient"}).status_code == 422
    assert post(client, "/notifications/push", PUSH).status_code == 202
    assert count(app) == 1


def test_a_key_expires_after_24_hours(app, client):
    post(client, "/notifications/push", PUSH)
    with app.app_context():
        idempotency.IdempotentRequest.update(
            created_at=utcnow() - dt.timedelta(hours=24, seconds=1)
        ).execute()
    assert "Idempotent-Replayed" not in post(client, "/notifications/push", PUSH).headers
    assert count(app) == 2


def claim_as_if_running(app, key, body, age):
    """Leave the claim a concurrent original holds while it runs: its caller and hash, no response."""
    headers = {"X-API-Key": KEYS[0], "Idempotency-Key": key}
    with app.test_request_context("/notifications/push", method="POST", json=body, headers=headers):
        app.preprocess_request()  # authenticates: who the caller is
        idempotency.IdempotentRequest.create(
            client=auth.caller(),
            key=key,
            request_hash=idempotent_api._fingerprint(),
            created_at=utcnow() - dt.timedelta(seconds=age),
        )


def test_a_retry_while_the_original_still_runs_is_a_409(app, client):
    claim_as_if_running(app, "busy", PUSH, age=0)
    response = post(client, "/notifications/push", PUSH, key="busy")
    assert response.status_code == 409
    assert "in progress" in response.json["message"]
    assert count(app) == 0


def test_a_claim_abandoned_by_a_dead_process_is_taken_over(app, client):
    claim_as_if_running(app, "orphan", PUSH, age=idempotent_api.ABANDONED_AFTER + 1)
    assert post(client, "/notifications/push", PUSH, key="orphan").status_code == 202
    assert count(app) == 1


class ProcessDied(BaseException):
    """Raised where the process would die: nothing catches it on the way out, as nothing would."""


def die_before_keeping_the_response(monkeypatch):
    def die(*_args):
        raise ProcessDied

    monkeypatch.setattr(idempotency, "complete", die)


def lapse_claims():
    """Age every claim past ABANDONED_AFTER, as the minute after a dead process's request does."""
    age = dt.timedelta(seconds=idempotent_api.ABANDONED_AFTER + 1)
    idempotency.IdempotentRequest.update(created_at=utcnow() - age).execute()


BATCH = {
    "notifications": [
        {"channel": "push", **PUSH},
        {"channel": "email", "recipient_id": "a@example.com", "content": "x"},
    ]
}


@pytest.mark.parametrize(("path", "body", "stored"), [("push", PUSH, 1), ("batch", BATCH, 2)])
def test_a_retry_after_the_process_died_before_answering_creates_nothing_new(
    app, client, monkeypatch, path, body, stored
):
    with monkeypatch.context() as patched:
        die_before_keeping_the_response(patched)
        with pytest.raises(ProcessDied):
            post(client, f"/notifications/{path}", body, key="dies")
    with app.app_context():
        first = {str(n.id) for n in models.Notification.select()}
        assert len(first) == stored
        lapse_claims()
    retry = post(client, f"/notifications/{path}", body, key="dies")
    assert retry.status_code == 202
    answered = retry.json.get("notification_ids") or [retry.json["notification_id"]]
    assert set(answered) == first
    assert count(app) == stored
    assert post(client, f"/notifications/{path}", body, key="dies").json == retry.json


def test_a_request_whose_retries_die_too_stores_its_notification_once(app, client, monkeypatch):
    with monkeypatch.context() as patched:
        die_before_keeping_the_response(patched)
        for _ in range(3):
            with pytest.raises(ProcessDied):
                post(client, "/notifications/push", PUSH, key="dies")
            with app.app_context():
                lapse_claims()
    assert post(client, "/notifications/push", PUSH, key="dies").status_code == 202
    assert count(app) == 1


def test_a_dead_request_retried_with_another_body_is_a_new_request(app, client, monkeypatch):
    with monkeypatch.context() as patched:
        die_before_keeping_the_response(patched)
        with pytest.raises(ProcessDied):
            post(client, "/notifications/push", PUSH, key="dies")
    with app.app_context():
        lapse_claims()
    assert post(client, "/notifications/push", {**PUSH, "content": "other"}, key="dies").status_code == 202
    assert count(app) == 2


def test_a_key_used_again_after_it_expired_stores_anew_and_retries_of_that_find_it(app, client, monkeypatch):
    post(client, "/notifications/push", PUSH, key="reused")
    with app.app_context():
        idempotency.IdempotentRequest.update(
            created_at=utcnow() - dt.timedelta(hours=24, seconds=1)
        ).execute()
    with monkeypatch.context() as patched:
        die_before_keeping_the_response(patched)
        with pytest.raises(ProcessDied):
            post(client, "/notifications/push", PUSH, key="reused")
    assert count(app) == 2
    with app.app_context():
        lapse_claims()
    assert post(client, "/notifications/push", PUSH, key="reused").status_code == 202
    assert count(app) == 2


@pytest.mark.parametrize("key", ["", "has space", "é", "x" * 256])
def test_a_malformed_key_is_a_422_naming_the_header(client, key):
    response = post(client, "/notifications/push", PUSH, key=key)
    assert response.status_code == 422
    assert "Idempotency-Key" in response.json["errors"]["headers"]


def test_concurrent_retries_create_one_notification_and_all_get_its_response(app):
    app.config["IDEMPOTENCY_WAIT"] = 10.0
    barrier = threading.Barrier(8)

    def attempt(_):
        client = app.test_client()
        barrier.wait()
        return post(client, "/notifications/push", PUSH, key="storm")

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(attempt, range(8)))
    assert [r.status_code for r in responses] == [202] * 8
    assert len({r.json["notification_id"] for r in responses}) == 1
    assert sum("Idempotent-Replayed" in r.headers for r in responses) == 7
    assert count(app) == 1
