"""API keys on every endpoint but /health, and the dashboard's own password."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import uuid
from pathlib import Path

import pytest

from api import create_app

PLAIN_KEY = "plain-key-0123456789"
HASHED_KEY = "hashed-key-9876543210"
HASHED_ENTRY = "sha256:" + hashlib.sha256(HASHED_KEY.encode()).hexdigest()
ROOT = Path(__file__).resolve().parents[1]
DENIED = {"code": 401, "status": "Unauthorized", "message": "Authentication required."}


def make_app(tmp_path, **config):
    app = create_app(
        {"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path}/auth.db", "RUN_WORKERS": False, **config}
    )
    # A JSON route under the dashboard's prefix, to see exactly what the authentication lets through.
    app.add_url_rule("/dashboard/probe", "dashboard_probe", lambda: {"ok": True})
    return app


@pytest.fixture
def client(tmp_path):
    return make_app(tmp_path, API_KEYS=(PLAIN_KEY, HASHED_ENTRY)).test_client()


def basic(password, user="admin"):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/notifications"),
        ("post", "/notifications/push"),
        ("post", "/notifications/email"),
        ("get", f"/notifications/{uuid.UUID(int=1)}"),
        ("post", f"/notifications/{uuid.UUID(int=1)}/cancel"),
        ("post", f"/notifications/{uuid.UUID(int=1)}/force"),
        ("get", "/openapi.json"),
        ("get", "/docs"),
        ("get", "/docs/static/swagger-ui-bundle.js"),
        ("get", "/no-such-page"),
        ("get", "/dashboard/probe"),
    ],
)
def test_every_endpoint_but_health_needs_a_key(client, method, path):
    response = getattr(client, method)(path, json={"recipient_id": "u", "content": "x"})
    assert response.status_code == 401
    assert response.json == DENIED
    assert "Bearer" in response.headers["WWW-Authenticate"]


# The routes open by design: the health check, and the unsubscribe link, whose signed token is its
# credential (an email client follows it without any key).
OPEN_ENDPOINTS = {"health.Health", "unsubscribe.Unsubscribe", "static"}


def _example_url(rule) -> str:
    """The rule's path with each variable filled with a value its converter takes."""
    values = {}
    for name in rule.arguments:
        converter = type(rule._converters[name]).__name__
        if converter == "UUIDConverter":
            values[name] = uuid.UUID(int=1)
        elif converter in ("IntegerConverter", "FloatConverter"):
            values[name] = 1
        elif converter == "AnyConverter":
            values[name] = sorted(rule._converters[name].items)[0]
        else:
            values[name] = "x"
    return rule.build(values, append_unknown=False)[1]


def test_every_route_the_app_has_refuses_a_request_without_a_key(tmp_path):
    """Every route registered, those added since too (devices, recipients, templates, dashboard pages)."""
    app = make_app(tmp_path, API_KEYS=(PLAIN_KEY,))
    client = app.test_client()
    checked = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in OPEN_ENDPOINTS or rule.endpoint.startswith("unsubscribe."):
            continue
        url = _example_url(rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = client.open(url, method=method, json={})
            assert response.status_code == 401, (method, url, response.status_code)
            checked.append((method, rule.rule))
    # The walk saw the resources of every issue, not an empty map.
    paths = {path for _, path in checked}
    assert {
        "/recipients/<path:recipient_id>/devices",
        "/templates/<string:name>",
        "/dashboard/webhooks",
    } <= paths


def test_health_needs_no_key(client):
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": f"Bearer {PLAIN_KEY}x"},
        {"Authorization": f"Bearer {HASHED_ENTRY}"},  # the configured hash is not itself a key
        {"Authorization": f"Token {PLAIN_KEY}"},
        {"Authorization": "Bearer"},
        {"X-API-Key": PLAIN_KEY[:-1]},
        basic(PLAIN_KEY),
    ],
)
def test_a_wrong_key_gets_the_same_answer_as_none(client, headers):
    response = client.get("/notifications", headers=headers)
    assert response.status_code == 401
    assert response.json == DENIED


@pytest.mark.parametrize("key", [PLAIN_KEY, HASHED_KEY])
@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
def test_plain_and_hashed_keys_work_in_either_header(client, key, header):
    value = f"Bearer {key}" if header == "Authorization" else key
    assert client.get("/notifications", headers={header: value}).status_code == 200
    assert client.get("/openapi.json", headers={header: value}).status_code == 200


def test_the_spec_documents_the_keys_and_the_401(client):
    spec = client.get("/openapi.json", headers={"X-API-Key": PLAIN_KEY}).json
    assert set(spec["components"]["securitySchemes"]) == {"bearerAuth", "apiKeyHeader"}
    push = spec["paths"]["/notifications/push"]["post"]
    assert push["security"] and "401" in push["responses"]
    assert spec["paths"]["/health"]["get"]["security"] == []


def test_dashboard_takes_an_api_key_or_its_password(tmp_path):
    client = make_app(tmp_path, API_KEYS=(PLAIN_KEY,), DASHBOARD_PASSWORD="s3cret").test_client()
    denied = client.get("/dashboard/probe")
    assert denied.status_code == 401
    assert denied.headers["WWW-Authenticate"].startswith('Basic realm="dashboard"')
    assert client.get("/dashboard/probe", headers=basic("wrong")).status_code == 401
    assert client.get("/dashboard/probe", headers=basic("s3cret")).json == {"ok": True}
    assert client.get("/dashboard/probe", headers={"X-API-Key": PLAIN_KEY}).status_code == 200
    # The dashboard's password opens the dashboard only.
    assert client.get("/notifications", headers=basic("s3cret")).status_code == 401


def test_dashboard_password_alone_leaves_the_api_open(tmp_path):
    client = make_app(tmp_path, DASHBOARD_PASSWORD="s3cret").test_client()
    assert client.get("/notifications").status_code == 200
    assert client.get("/dashboard/probe").status_code == 401
    assert client.get("/dashboard/probe", headers=basic("s3cret")).status_code == 200


def test_without_keys_or_password_everything_is_open(tmp_path):
    client = make_app(tmp_path).test_client()
    assert client.get("/notifications").status_code == 200
    assert client.get("/dashboard/probe").status_code == 200
    assert "securitySchemes" not in client.get("/openapi.json").json["components"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"API_KEYS": "ok-key, sha256:abc"}, "API_KEYS"),
        ({"RATE_LIMIT": "ten/minute"}, "RATE_LIMIT"),
        ({"RATE_LIMIT": "10/fortnight"}, "RATE_LIMIT"),
        ({"RATE_LIMIT": "0/minute"}, "RATE_LIMIT"),
        ({"MAX_DATA_DEPTH": "0"}, "MAX_DATA_DEPTH"),
    ],
)
def test_bad_security_settings_stop_start_up_naming_the_variable(python, env, message):
    result = subprocess.run(
        [python, "-c", "import settings"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert message in result.stderr.splitlines()[-1]


def test_security_settings_are_parsed(python):
    code = "import settings; print(settings.API_KEYS, settings.RATE_LIMIT)"
    env = {"API_KEYS": f" a , {HASHED_ENTRY},", "RATE_LIMIT": "1000/Minute"}
    result = subprocess.run(
        [python, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == f"('a', '{HASHED_ENTRY}') (1000, 60)"


def test_the_real_dashboard_pages_are_behind_the_same_guard(tmp_path):
    client = make_app(tmp_path, API_KEYS=(PLAIN_KEY,), DASHBOARD_PASSWORD="s3cret").test_client()
    assert client.get("/dashboard/").status_code == 401
    page = client.get("/dashboard/", headers=basic("s3cret"))
    assert page.status_code == 200
    assert b"<html" in page.data.lower()
    assert (
        client.post("/dashboard/notifications/00000000-0000-0000-0000-000000000000/cancel").status_code == 401
    )
