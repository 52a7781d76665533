"""Recipients' profiles: create, replace, change, read and list them; bad input is a 422 naming the field."""

from __future__ import annotations

import re
import uuid

import pytest

PROFILE = {
    "email": "ada@example.com",
    "timezone": "Europe/Warsaw",
    "locale": "pl-PL",
    "delivery_window": {"start": "09:00", "end": "21:30", "days": ["mon", "tue", "wed", "thu", "fri"]},
    "preferences": {
        "channels": {"email": True, "push": True},
        "categories": {"marketing": {"email": False}, "security": {"email": True, "push": True}},
    },
}


@pytest.fixture
def client(keyed_client):
    """Every test here with the API keys set."""
    return keyed_client


@pytest.fixture
def rid(recipient_id):
    return recipient_id


def test_put_creates_then_replaces(client, rid):
    created = client.put(f"/recipients/{rid}", json=PROFILE)
    assert created.status_code == 201, created.json
    assert created.json == {
        **PROFILE,
        "id": rid,
        "created_at": created.json["created_at"],
        "updated_at": created.json["updated_at"],
        "devices": 0,
    }
    replaced = client.put(f"/recipients/{rid}", json={"timezone": "Asia/Tokyo"})
    assert replaced.status_code == 200
    # A replacement clears what it does not name.
    assert replaced.json["timezone"] == "Asia/Tokyo"
    assert replaced.json["email"] is None
    assert replaced.json["preferences"] is None
    assert replaced.json["created_at"] == created.json["created_at"]
    assert client.get(f"/recipients/{rid}").json == replaced.json


def test_patch_replaces_only_the_fields_it_names_each_whole(client, rid):
    client.put(f"/recipients/{rid}", json=PROFILE)
    patched = client.patch(
        f"/recipients/{rid}", json={"preferences": {"channels": {"push": False}}, "locale": None}
    )
    assert patched.status_code == 200, patched.json
    assert patched.json["preferences"] == {"channels": {"push": False}}
    assert patched.json["locale"] is None
    assert patched.json["email"] == PROFILE["email"]
    assert patched.json["delivery_window"] == PROFILE["delivery_window"]


def test_patch_without_a_profile_is_404(client, rid):
    response = client.patch(f"/recipients/{rid}", json={"locale": "en"})
    assert response.status_code == 404
    assert client.get(f"/recipients/{rid}").status_code == 404


def test_the_profile_counts_the_recipients_devices(client, rid):
    client.put(f"/recipients/{rid}", json={"timezone": "Europe/Warsaw"})
    for token in ("fcm-token-one", "fcm-token-two"):
        response = client.post(f"/recipients/{rid}/devices", json={"kind": "fcm", "token": f"{token}-{rid}"})
        assert response.status_code == 201, response.json
    assert client.get(f"/recipients/{rid}").json["devices"] == 2
    (listed,) = [r for r in client.get("/recipients?limit=1000").json["recipients"] if r["id"] == rid]
    assert listed["devices"] == 2


def test_get_without_a_profile_is_404(client, rid):
    response = client.get(f"/recipients/{rid}")
    assert response.status_code == 404
    assert rid in response.json["message"]


def test_an_address_can_be_a_recipient_id(client):
    address = f"{uuid.uuid4().hex[:8]}@example.com"
    assert client.put(f"/recipients/{address}", json={"locale": "en-GB"}).status_code == 201
    assert client.get(f"/recipients/{address}").json["id"] == address


def test_list_is_paged_newest_first(client):
    prefix = uuid.uuid4().hex[:8]
    for n in range(3):
        assert client.put(f"/recipients/{prefix}-{n}", json={}).status_code == 201
    everyone = client.get("/recipients?limit=1000").json
    ours = [r["id"] for r in everyone["recipients"] if r["id"].startswith(prefix)]
    assert ours == [f"{prefix}-2", f"{prefix}-1", f"{prefix}-0"]
    assert everyone["count"] >= 3
    page = client.get("/recipients?limit=1&offset=1").json
    assert len(page["recipients"]) == 1
    assert page["count"] == everyone["count"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-address"}, "email"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"locale": "polish please"}, "locale"),
        ({"locale": "p"}, "locale"),
        ({"delivery_window": {"start": "9:00", "end": "21:00"}}, "delivery_window"),
        ({"delivery_window": {"start": "09:00", "end": "24:00"}}, "delivery_window"),
        ({"delivery_window": {"start": "09:00"}}, "delivery_window"),
        ({"delivery_window": {"start": "09:00", "end": "17:00", "days": ["monday"]}}, "delivery_window"),
        ({"delivery_window": {"start": "09:00", "end": "17:00", "days": ["mon", "mon"]}}, "delivery_window"),
        ({"preferences": {"categories": {"Marketing": {"email": False}}}}, "preferences"),
        ({"preferences": {"categories": {"x" * 65: {"email": False}}}}, "preferences"),
        ({"preferences": {"categories": {"": {"email": False}}}}, "preferences"),
        ({"preferences": {"channels": {"sms": False}}}, "preferences"),
        ({"preferences": {"channels": {"email": "no"}}}, "preferences"),
        ({"nickname": "ada"}, "nickname"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(client, rid, body, field):
    for method in (client.put, client.patch):
        response = method(f"/recipients/{rid}", json=body)
        assert response.status_code == 422, response.json
        assert field in response.json["errors"]["json"]
    assert client.get(f"/recipients/{rid}").status_code == 404


def test_the_nested_error_names_the_inner_field(client, rid):
    response = client.put(f"/recipients/{rid}", json={"delivery_window": {"start": "09:00", "end": "25:00"}})
    assert list(response.json["errors"]["json"]["delivery_window"]) == ["end"]


def test_good_locales_are_accepted(client, rid):
    for locale in ("en", "pl-PL", "zh-Hant-TW", "es-419", "de-CH-1996", "en-US-x-twain"):
        response = client.put(f"/recipients/{rid}", json={"locale": locale})
        assert response.status_code in (200, 201), (locale, response.json)


def test_a_bad_recipient_id_in_the_path_is_a_422_naming_it(client):
    response = client.put("/recipients/" + "x" * 321, json={})
    assert response.status_code == 422
    assert "recipient_id" in response.json["errors"]["path"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/recipients"), ("get", "/recipients/u"), ("put", "/recipients/u"), ("patch", "/recipients/u")],
)
def test_every_recipient_route_needs_a_key(client, method, path):
    del client.environ_base["HTTP_X_API_KEY"]
    response = getattr(client, method)(path, json={})
    assert response.status_code == 401
    client.environ_base["HTTP_X_API_KEY"] = "wrong-key"
    assert getattr(client, method)(path, json={}).status_code == 401


def test_the_routes_are_in_the_openapi_spec(client):
    paths = client.get("/openapi.json").json["paths"]
    assert {"get", "put", "patch"} <= paths["/recipients/{recipient_id}"].keys()
    assert "get" in paths["/recipients"]


def test_the_dashboard_shows_a_recipients_profile_preferences_and_notifications(client, rid):
    client.put(f"/recipients/{rid}", json=PROFILE)
    sent = client.post(
        "/notifications/push", json={"recipient_id": rid, "content": "x", "category": "security"}
    )
    html = client.get(f"/dashboard/recipients/{rid}").text
    assert "ada@example.com" in html and "Europe/Warsaw" in html and "pl-PL" in html
    assert "09:00\u201321:30 mon, tue, wed, thu, fri" in html
    marketing = re.search(r'<tr data-category="marketing">(.*?)</tr>', html, re.S)[1]
    assert re.findall(r"<td>(.*?)</td>", marketing) == [
        "marketing",
        "on",
        '<span class="status s-failed">off</span>',
    ]
    assert sent.json["notification_id"][:8] in html
    notification = client.get(f"/dashboard/notifications/{sent.json['notification_id']}").text
    assert f'href="/dashboard/recipients/{rid}"' in notification


def test_the_dashboard_page_of_a_recipient_without_a_profile_says_so(client, rid):
    assert "No profile" in client.get(f"/dashboard/recipients/{rid}").text


def test_the_dashboards_recipient_page_needs_a_key(client, rid):
    assert client.get(f"/dashboard/recipients/{rid}", environ_base={"HTTP_X_API_KEY": ""}).status_code == 401
