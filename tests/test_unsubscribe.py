"""One-click unsubscribe: the headers as a real SMTP server receives them, the POST, the page, the key."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys
from urllib.parse import urlsplit

import pytest

import settings
import unsubscribe
from actors import providers
from actors.delivery import deliver
from harness.factories import take
from harness.processes import ROOT
from storage import queries

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def client(keyed_client):
    return keyed_client


@pytest.fixture
def smtp(smtp_server, monkeypatch):
    monkeypatch.setattr(settings, "SMTP_URLS", (smtp_server.url,))
    monkeypatch.setattr(providers, "_providers", {})
    return smtp_server


def send(client, recipient_id, **body):
    response = client.post(
        "/notifications/email", json={"recipient_id": recipient_id, "content": "x", **body}
    )
    assert response.status_code == 202, response.json
    return response.json["notification_id"]


def deliver_due(notification_id):
    while taken := take():
        mine = [p for p in taken if p.notification_id == notification_id]
        if mine:
            deliver({mine[0].notification_id: mine[0].seq})
            return queries.get(notification_id)
    raise AssertionError(f"{notification_id} was not due")


def received_link(smtp):
    """The received message's List-Unsubscribe link, checked to be one plain <URL> as it was sent."""
    (received,) = smtp.wait_for(1)
    raw = dict(received.message.raw_items())
    header = raw["List-Unsubscribe"]
    assert "=?" not in header, "RFC 2047-encoded: no mail client follows that"
    assert "\n" not in header and "\r" not in header
    assert header.startswith("<") and header.endswith(">")
    assert raw["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    return header[1:-1]


def anonymous_post(client, url, **kwargs):
    """A POST as a mail provider makes it: to the link's path, with no API key."""
    return client.post(urlsplit(url).path, environ_base={"HTTP_X_API_KEY": ""}, **kwargs)


def test_an_email_carries_a_one_click_link_that_turns_its_category_off(client, recipient_id, smtp):
    # A long id makes a long link: the default email policy would have encoded the header.
    rid = f"{recipient_id}-{secrets.token_hex(100)}"
    client.put(f"/recipients/{rid}", json={"email": "ada@example.com"})
    assert deliver_due(send(client, rid, category="marketing")).status == "Delivered"

    url = received_link(smtp)
    assert url.startswith(f"{settings.PUBLIC_URL}/unsubscribe/")
    assert len(url) > 200
    response = anonymous_post(client, url, data=ONE_CLICK)
    assert response.status_code == 200
    assert client.get(f"/recipients/{rid}").json["preferences"] == {
        "categories": {"marketing": {"email": False}}
    }
    # Later marketing email is accepted and cancelled; other email still goes.
    assert queries.get(send(client, rid, category="marketing")).status == "Cancelled"
    assert queries.get(send(client, rid, category="security")).status == "Pending"


def test_without_a_category_the_link_turns_all_email_off(client, recipient_id, smtp):
    client.put(f"/recipients/{recipient_id}", json={"email": "ada@example.com", "locale": "en"})
    deliver_due(send(client, recipient_id))
    assert anonymous_post(client, received_link(smtp), data=ONE_CLICK).status_code == 200
    profile = client.get(f"/recipients/{recipient_id}").json
    assert profile["preferences"] == {"channels": {"email": False}}
    assert profile["locale"] == "en"


def test_an_address_used_directly_gets_a_profile_with_the_preference_off(client, recipient_id, smtp):
    address = f"{recipient_id}@example.com"
    assert deliver_due(send(client, address)).last_error is None
    assert anonymous_post(client, received_link(smtp), data=ONE_CLICK).status_code == 200
    assert client.get(f"/recipients/{address}").json["preferences"] == {"channels": {"email": False}}
    assert queries.get(send(client, address)).status == "Cancelled"


def test_the_page_shows_a_button_and_changes_nothing(client, recipient_id):
    token = unsubscribe.token_for(settings.SECRET_KEY, recipient_id, "news")
    page = client.get(f"/unsubscribe/{token}", environ_base={"HTTP_X_API_KEY": ""})
    assert page.status_code == 200
    assert b'<form method="post">' in page.data
    assert b'name="List-Unsubscribe" value="One-Click"' in page.data
    assert client.get(f"/recipients/{recipient_id}").status_code == 404


@pytest.mark.parametrize(
    "token",
    [
        "not-a-token",
        unsubscribe.token_for("another-secret-key-0123456789", "ada", None),
        unsubscribe.token_for(settings.SECRET_KEY, "ada", None)[:-2] + "xx",
    ],
)
def test_a_bad_or_tampered_token_is_a_400_and_changes_nothing(client, token):
    for method in (client.get, client.post):
        response = method(f"/unsubscribe/{token}", environ_base={"HTTP_X_API_KEY": ""}, data=ONE_CLICK)
        assert response.status_code == 400
    assert client.get("/recipients/ada").status_code == 404


def test_a_changed_payload_is_refused():
    token = unsubscribe.token_for(settings.SECRET_KEY, "ada", "marketing")
    other = unsubscribe.token_for(settings.SECRET_KEY, "bob", None)
    forged = other.split(".")[0] + "." + token.split(".")[1]
    with pytest.raises(unsubscribe.BadToken):
        unsubscribe.read(settings.SECRET_KEY, forged)
    assert unsubscribe.read(settings.SECRET_KEY, token) == ("ada", "marketing")


def test_other_routes_still_need_the_key(client):
    assert client.get("/recipients", environ_base={"HTTP_X_API_KEY": ""}).status_code == 401


def _start(tmp_path, **env):
    environment = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "BROKER_URL")}
    script = "import settings; print(settings.SECRET_KEY)"
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**environment, "SECRET_KEY_FILE": str(tmp_path / "var" / "secret_key"), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_embedded_default_makes_a_secret_key_once(tmp_path):
    first, second = _start(tmp_path), _start(tmp_path)
    assert first.returncode == second.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert len(first.stdout.strip()) == 64
    assert stat.S_IMODE((tmp_path / "var" / "secret_key").stat().st_mode) == 0o600


def test_with_a_broker_start_up_stops_naming_secret_key_when_it_is_missing(tmp_path):
    stopped = _start(tmp_path, BROKER_URL="amqp://guest:guest@127.0.0.1:5672/")
    assert stopped.returncode != 0
    assert "SECRET_KEY" in stopped.stderr
    assert not (tmp_path / "var" / "secret_key").exists()
    given = _start(tmp_path, BROKER_URL="amqp://guest:guest@127.0.0.1:5672/", SECRET_KEY="k" * 32)
    assert given.returncode == 0, given.stderr
    assert given.stdout.strip() == "k" * 32
