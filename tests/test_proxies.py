"""FORWARDED_ALLOW_IPS: client address and scheme from X-Forwarded-* only when a trusted proxy sent them."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from gunicorn.config import Config

from api import create_app
from harness.processes import ROOT, Service
from storage import ratelimit

PROXY = "10.0.0.7"  # the trusted proxy
STRANGER = "198.51.100.9"  # a client reaching the service directly
CLIENTS = ("203.0.113.1", "203.0.113.2")


@pytest.fixture
def limited(database_url):
    """The API without keys, 2 requests a minute per client address, behind the proxy at PROXY."""
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": database_url,
            "RUN_WORKERS": False,
            "RATE_LIMIT": (2, 60),
            "FORWARDED_ALLOW_IPS": (PROXY,),
        }
    )
    with app.app_context():
        ratelimit.RateLimitWindow.delete().execute()
    return app.test_client()


def get(client, peer: str, forwarded_for: str) -> int:
    return client.get(
        "/notifications", headers={"X-Forwarded-For": forwarded_for}, environ_base={"REMOTE_ADDR": peer}
    ).status_code


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit(limited):
    # Appended to what the client claimed itself: the proxy's own entry is the last one.
    one, two = f"1.2.3.4, {CLIENTS[0]}", CLIENTS[1]

    assert [get(limited, PROXY, one) for _ in range(3)] == [200, 200, 429]
    assert [get(limited, PROXY, two) for _ in range(3)] == [200, 200, 429]


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(limited):
    statuses = [get(limited, STRANGER, client) for client in (*CLIENTS, "203.0.113.3")]

    assert statuses == [200, 200, 429]  # one client, whatever it says it forwards
    assert get(limited, PROXY, CLIENTS[0]) == 200  # and not counted against the address it named


def dashboard_cookie(app, peer: str, headers: dict[str, str]) -> str:
    client = app.test_client()
    response = client.post(
        "/notifications/push",
        json={"recipient_id": "u1", "content": "hi", "scheduled_time": "2030-01-01T08:30:00Z"},
    )
    page = client.get(
        f"/dashboard/notifications/{response.json['notification_id']}",
        headers=headers,
        environ_base={"REMOTE_ADDR": peer},
    )
    assert page.status_code == 200
    return page.headers["Set-Cookie"]


@pytest.mark.parametrize(
    ("peer", "headers", "secure"),
    [
        (PROXY, {"X-Forwarded-Proto": "https"}, True),
        (PROXY, {"X-Forwarded-Proto": "http"}, False),
        (PROXY, {}, False),
        (STRANGER, {"X-Forwarded-Proto": "https"}, False),
    ],
    ids=["trusted-https", "trusted-http", "trusted-nothing", "untrusted-https"],
)
def test_dashboard_cookie_is_secure_when_a_trusted_proxy_says_https(tmp_path, peer, headers, secure):
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path}/api.db",
            "RUN_WORKERS": False,
            "FORWARDED_ALLOW_IPS": (PROXY,),
        }
    )

    cookie = dashboard_cookie(app, peer, headers)

    assert cookie.startswith("dashboard_csrf=")
    assert ("Secure" in cookie.split("; ")) is secure


@pytest.mark.parametrize("allowed", [("*",), ("10.0.0.0/8",), ("::1", "10.0.0.7")])
def test_any_network_or_star_trusts_the_proxy(tmp_path, allowed):
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path}/api.db",
            "RUN_WORKERS": False,
            "FORWARDED_ALLOW_IPS": allowed,
        }
    )

    assert "Secure" in dashboard_cookie(app, PROXY, {"X-Forwarded-Proto": "https"}).split("; ")


def read_setting(value: str | None) -> subprocess.CompletedProcess:
    env = {key: v for key, v in os.environ.items() if key != "FORWARDED_ALLOW_IPS"}
    if value is not None:
        env["FORWARDED_ALLOW_IPS"] = value
    return subprocess.run(
        [sys.executable, "-c", "import settings; print(repr(settings.FORWARDED_ALLOW_IPS))"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    "value", [None, "", "  ", "*", "10.0.0.7", " 10.0.0.0/8 , ::1", "10.0.0.7,,192.168.0.0/16", "*,10.0.0.7"]
)
def test_the_setting_is_read_as_gunicorn_reads_it(value):
    gunicorn = Config()
    if value is not None:
        gunicorn.set("forwarded_allow_ips", value)

    result = read_setting(value)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == repr(tuple(gunicorn.forwarded_allow_ips))


@pytest.mark.parametrize("value", ["localhost", "10.0.0.1/8", "10.0.0.7, ,::1", "10.0.0.300"])
def test_a_value_gunicorn_refuses_stops_start_up_naming_the_variable(value):
    with pytest.raises(ValueError):
        Config().set("forwarded_allow_ips", value)

    result = read_setting(value)

    assert result.returncode != 0
    assert "FORWARDED_ALLOW_IPS" in result.stderr


def fetch(url: str, headers: dict[str, str]) -> tuple[int, str]:
    """The status and Set-Cookie of a GET."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, response.headers.get("Set-Cookie", "")
    except urllib.error.HTTPError as refused:
        with refused:
            return refused.code, ""


@pytest.mark.parametrize(
    ("allowed", "statuses", "secure"),
    [("127.0.0.1", [200, 200, 200], True), ("192.0.2.1", [200, 429, 429], False)],
    ids=["trusted", "untrusted"],
)
def test_under_gunicorn_address_and_scheme_follow_the_same_setting(tmp_path, allowed, statuses, secure):
    """gunicorn decides wsgi.url_scheme from the same proxies the app believes, or it would make it https."""
    service = Service(
        tmp_path,
        DATABASE_URL=f"sqlite:///{tmp_path}/api.db",
        FORWARDED_ALLOW_IPS=allowed,
        RATE_LIMIT="2/minute",
    )
    try:
        service.start_api()
        nid = service.notify("push", recipient_id="u1", content="hi", scheduled_time="2030-01-01T08:30:00Z")
        page = f"{service.base_url}/dashboard/notifications/{nid}"
        # Three clients through the proxy, after the request above from the proxy's address itself.
        answers = [
            fetch(page, {"X-Forwarded-For": client, "X-Forwarded-Proto": "https"})
            for client in (*CLIENTS, "203.0.113.3")
        ]
    finally:
        service.close()

    assert [status for status, _ in answers] == statuses
    cookie = answers[0][1]
    assert cookie.startswith("dashboard_csrf=")
    assert ("Secure" in cookie.split("; ")) is secure
