"""The REST API: shapes, validation, lookups, listing, cancel and force."""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from unittest import mock

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError

from api import schemas
from storage import models

PUSH = {"recipient_id": "user123", "content": "Your order has been shipped!"}
EMAIL = {"recipient_id": "user@example.com", "content": "Your invoice is ready", "subject": "Invoice"}


def post(client, channel, **body):
    return client.post(f"/notifications/{channel}", json=body)


def create(client, channel="push", **overrides):
    body = {**(PUSH if channel == "push" else EMAIL), **overrides}
    response = post(client, channel, **body)
    assert response.status_code == 202, response.json
    return response.json["notification_id"]


def test_post_push_is_accepted_with_the_documented_shape(client):
    response = post(client, "push", **PUSH, title="Shipped", data={"order": 42})
    assert response.status_code == 202
    assert response.json["status"] == "success"
    assert response.json["message"] == "Push notification scheduled"
    uuid.UUID(response.json["notification_id"])


def test_post_email_is_accepted(client):
    response = post(client, "email", **EMAIL)
    assert response.status_code == 202
    assert response.json["message"] == "Email notification scheduled"


def test_get_one_has_every_documented_field(client):
    nid = create(client, timezone="America/New_York", scheduled_time="2023-12-01T15:30:00")
    body = client.get(f"/notifications/{nid}").json
    expected = {
        "id", "recipient_id", "content", "channel", "status", "created_at", "scheduled_time", "timezone",
        "local_scheduled_time", "appropriate_delivery", "estimated_delivery_time", "attempt_count",
        "updated_at", "delivered_at", "last_error",
    }  # fmt: skip
    assert expected <= body.keys()
    assert body["id"] == nid
    assert body["channel"] == "push"
    assert body["status"] == "Pending"
    assert body["scheduled_time"] == "2023-12-01T20:30:00+00:00"
    assert body["local_scheduled_time"] == "2023-12-01T15:30:00-05:00"
    assert body["appropriate_delivery"] is True
    assert body["attempt_count"] == 0
    assert body["delivered_at"] is None
    dt.datetime.fromisoformat(body["created_at"])
    assert dt.datetime.fromisoformat(body["estimated_delivery_time"]).utcoffset() is not None


def test_night_time_request_is_estimated_for_next_morning(client):
    nid = create(client, timezone="Europe/Warsaw", scheduled_time="2030-01-10T23:30:00")
    body = client.get(f"/notifications/{nid}").json
    assert body["appropriate_delivery"] is False
    assert body["estimated_delivery_time"] == "2030-01-11T08:00:00+01:00"


def test_default_timezone_is_utc(client):
    nid = create(client, scheduled_time="2030-05-05T12:00:00")
    body = client.get(f"/notifications/{nid}").json
    assert body["timezone"] == "UTC"
    assert body["scheduled_time"] == body["local_scheduled_time"] == "2030-05-05T12:00:00+00:00"


@pytest.mark.parametrize(
    ("channel", "body", "field"),
    [
        ("push", {"content": "x"}, "recipient_id"),
        ("push", {"recipient_id": "u"}, "content"),
        ("push", {"recipient_id": "u", "content": ""}, "content"),
        ("push", {"recipient_id": "u", "content": "x" * 10001}, "content"),
        ("push", {"recipient_id": "   ", "content": "x"}, "recipient_id"),
        ("push", {"recipient_id": "u", "content": "x", "timezone": "Mars/Olympus"}, "timezone"),
        ("push", {"recipient_id": "u", "content": "x", "scheduled_time": "tomorrow"}, "scheduled_time"),
        (
            "push",
            {"recipient_id": "u", "content": "x", "scheduled_time": "9999-12-31T23:59:59"},
            "scheduled_time",
        ),
        ("push", {"recipient_id": "u", "content": "x", "data": [1, 2]}, "data"),
        ("push", {"recipient_id": "u", "content": "x", "colour": "red"}, "colour"),
        ("email", {"recipient_id": "not-an-address", "content": "x"}, "recipient_id"),
        ("email", {"recipient_id": "a@example.com", "content": "x", "title": "push only"}, "title"),
    ],
)
def test_bad_input_is_a_422_naming_the_field_and_writes_nothing(app, client, channel, body, field):
    response = post(client, channel, **body)
    assert response.status_code == 422
    assert field in response.json["errors"]["json"]
    with app.app_context():
        assert models.Notification.select().count() == 0


def test_body_that_is_not_json_is_a_4xx(client):
    response = client.post("/notifications/push", data="{nope", content_type="application/json")
    assert 400 <= response.status_code < 500


def test_unknown_id_is_404(client):
    missing = uuid.uuid4()
    for response in (
        client.get(f"/notifications/{missing}"),
        client.post(f"/notifications/{missing}/cancel"),
        client.post(f"/notifications/{missing}/force"),
    ):
        assert response.status_code == 404
        assert str(missing) in response.json["message"]


def test_malformed_id_is_404(client):
    assert client.get("/notifications/not-a-uuid").status_code == 404


def test_cancel_pending(client):
    nid = create(client, scheduled_time="2030-01-01T12:00:00")
    response = client.post(f"/notifications/{nid}/cancel")
    assert response.status_code == 200
    assert response.json["status"] == "success"
    assert response.json["message"] == "Notification cancelled"
    assert response.json["notification_id"] == nid
    assert "task_id" in response.json
    assert client.get(f"/notifications/{nid}").json["status"] == "Cancelled"


def test_cancel_twice_is_a_conflict_saying_why(client):
    nid = create(client, scheduled_time="2030-01-01T12:00:00")
    client.post(f"/notifications/{nid}/cancel")
    response = client.post(f"/notifications/{nid}/cancel")
    assert response.status_code == 409
    assert "Cancelled" in response.json["message"]


def test_force_cancelled_is_a_conflict(client):
    nid = create(client, scheduled_time="2030-01-01T12:00:00")
    client.post(f"/notifications/{nid}/cancel")
    response = client.post(f"/notifications/{nid}/force")
    assert response.status_code == 409
    assert "Cancelled" in response.json["message"]


def test_force_makes_it_due_now_and_sends_a_message(client):
    nid = create(client, scheduled_time="2030-01-01T03:00:00")
    before = dt.datetime.now(dt.UTC)
    response = client.post(f"/notifications/{nid}/force")
    assert response.status_code == 200
    assert response.json["message"] == "Notification delivery forced"
    assert response.json["notification_id"] == nid
    uuid.UUID(response.json["task_id"])
    body = client.get(f"/notifications/{nid}").json
    assert body["status"] == "Pending"
    due = dt.datetime.fromisoformat(body["estimated_delivery_time"])
    assert before <= due <= dt.datetime.now(dt.UTC)  # due from the moment it was forced


def test_list_is_newest_first_with_total_count_and_paging(client):
    ids = [create(client, recipient_id=f"r{i}") for i in range(5)]
    page = client.get("/notifications?limit=2&offset=1").json
    assert page["count"] == 5
    assert [n["id"] for n in page["notifications"]] == ids[::-1][1:3]


def test_list_filters_by_status_case_insensitively_channel_and_recipient(client):
    keep = create(client, "email", scheduled_time="2030-01-01T12:00:00")
    cancelled = create(client, "push", recipient_id="alice", scheduled_time="2030-01-01T12:00:00")
    client.post(f"/notifications/{cancelled}/cancel")
    by_status = client.get("/notifications?status=cAnCeLlEd").json
    assert [n["id"] for n in by_status["notifications"]] == [cancelled]
    by_channel = client.get("/notifications?channel=email").json
    assert [n["id"] for n in by_channel["notifications"]] == [keep]
    by_recipient = client.get("/notifications?recipient_id=alice").json
    assert by_recipient["count"] == 1


@pytest.mark.parametrize(
    ("query", "field"),
    [("status=sent", "status"), ("channel=sms", "channel"), ("limit=0", "limit"), ("limit=1001", "limit"),
     ("offset=-1", "offset"), ("limit=abc", "limit")],
)  # fmt: skip
def test_bad_list_query_is_a_422_naming_the_parameter(client, query, field):
    response = client.get(f"/notifications?{query}")
    assert response.status_code == 422
    assert field in response.json["errors"]["query"]


def test_default_page_size_is_50(client, app):
    with app.app_context():
        now = dt.datetime(2030, 1, 1)
        common = {"channel": "push", "content": "x", "timezone": "UTC", "appropriate_delivery": True}
        times = {"scheduled_time": now, "due_at": now, "created_at": now, "updated_at": now}
        rows = [{**common, **times, "recipient_id": f"r{i}", "api_host": "t"} for i in range(60)]
        models.Notification.insert_many(rows).execute()
    page = client.get("/notifications").json
    assert page["count"] == 60
    assert len(page["notifications"]) == 50


def test_health_reports_database_and_broker(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "database": "ok", "broker": "ok"}


def test_health_is_503_when_the_database_is_unreachable(tmp_path):
    from api import create_app

    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path}/h.db", "RUN_WORKERS": False})
    (tmp_path / "h.db").unlink()
    (tmp_path / "h.db").mkdir()  # a directory where the database file was: it cannot be opened
    import storage

    storage.db.close()
    response = app.test_client().get("/health")
    assert response.status_code == 503
    assert response.json["database"] == "unreachable"


@pytest.mark.postgres
def test_no_free_connection_is_a_503_and_stores_nothing(postgres_url):
    import threading

    import storage
    from api import create_app

    url = f"{postgres_url}?max_connections=1&pool_timeout=0.1"
    app = create_app({"TESTING": True, "DATABASE_URL": url, "RUN_WORKERS": False})
    with storage.db.connection_context():
        storage.db.execute_sql("TRUNCATE notification")
    held, release = threading.Event(), threading.Event()

    def hold_the_only_connection() -> None:
        with storage.db.connection_context():
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_only_connection)
    holder.start()
    try:
        assert held.wait(10)
        response = post(app.test_client(), "push", **PUSH)
    finally:
        release.set()
        holder.join()
    assert response.status_code == 503
    assert response.json["message"] == "The database is unavailable; try again shortly."
    with storage.db.connection_context():
        assert storage.db.execute_sql("SELECT count(*) FROM notification").fetchone()[0] == 0
    storage.db.close()


def test_openapi_spec_and_swagger_ui_are_served(client):
    spec = client.get("/openapi.json").json
    assert "/notifications/push" in spec["paths"]
    assert spec["paths"]["/notifications/push"]["post"]["summary"] == "Schedule a push notification"
    page = client.get("/docs")
    assert page.status_code == 200
    assert b"/docs/static/swagger-ui-bundle.js" in page.data
    with client.get("/docs/static/swagger-ui-bundle.js") as script:
        assert script.status_code == 200
        assert b"SwaggerUIBundle" in script.data


def test_batch_accepts_push_and_email_in_order(client):
    items = [
        {"channel": "push", **PUSH, "title": "t"},
        {"channel": "email", **EMAIL},
        {"channel": "push", **PUSH, "scheduled_time": "2030-01-01T23:00:00", "timezone": "Asia/Tokyo"},
    ]
    response = client.post("/notifications/batch", json={"notifications": items})
    assert response.status_code == 202
    ids = response.json["notification_ids"]
    assert response.json["count"] == len(ids) == 3
    assert [client.get(f"/notifications/{i}").json["channel"] for i in ids] == ["push", "email", "push"]
    night = client.get(f"/notifications/{ids[2]}").json
    assert night["estimated_delivery_time"] == "2030-01-02T08:00:00+09:00"


def test_batch_is_all_or_nothing_and_names_the_bad_item_and_field(app, client):
    items = [{"channel": "push", **PUSH}, {"channel": "email", "recipient_id": "nope", "content": "x"}]
    response = client.post("/notifications/batch", json={"notifications": items})
    assert response.status_code == 422
    assert "recipient_id" in response.json["errors"]["json"]["notifications"]["1"]
    with app.app_context():
        assert models.Notification.select().count() == 0


def test_a_batch_refused_late_stores_none_and_names_every_bad_item(keyed_client, recipient_id):
    """On PostgreSQL rows go to the database as they are made: a bad item after hundreds still
    leaves none stored, and every bad item is named."""
    push = {"channel": "push", **PUSH, "recipient_id": recipient_id}
    bad = {"channel": "email", "recipient_id": f"{recipient_id}-no-address", "content": "x"}
    items = [push] * 500 + [bad] + [push] * 10 + [bad] + [push] * 5
    response = keyed_client.post("/notifications/batch", json={"notifications": items})
    assert response.status_code == 422
    assert set(response.json["errors"]["json"]["notifications"]) == {"500", "511"}
    assert models.Notification.select().where(models.Notification.recipient_id == recipient_id).count() == 0


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"notifications": []},
        {"notifications": [{"channel": "sms", **PUSH}]},
        {"notifications": [{"channel": ["push"], **PUSH}]},
        {"notifications": [1]},
    ],
)
def test_bad_batches_are_422(client, body):
    assert client.post("/notifications/batch", json=body).status_code == 422


_TIMES = [
    "2030-01-01T23:00:00", "2030-01-01T23:00:00+02:00", "2030-01-01T23:00:00Z", "2030-01-01",
    "1969-12-31T23:59:59", "2999-01-01T00:00:00", "20300101T230000", "2030-13-01T00:00:00", "not a time", "",
]  # fmt: skip
_ODD_TEXT = [
    "",
    " ",
    "a" * 255,
    "a" * 256,
    "x" * 10_000,
    "x" * 10_001,
    "a\x00b",
    "\ud800",
    "tab\tx",
    "\u2028",
    "ü",
]
NEAR_FUTURE = dt.datetime(2031, 1, 1)
_ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=12,
)


def _field(usual, odd):
    """Half the time a usual value, else one at or past a limit, or of another type."""
    unusual = st.sampled_from(odd) | st.text(max_size=20) | st.none() | st.integers() | st.booleans()
    return st.booleans().flatmap(lambda is_usual: usual if is_usual else unusual)


_NAMES = st.text(st.characters(codec="utf-8", categories=["L", "N", "P"]), min_size=1, max_size=30)
_PUSH_BODIES = st.fixed_dictionaries(
    {"recipient_id": _field(_NAMES, _ODD_TEXT), "content": _field(_NAMES, _ODD_TEXT)},
    optional={
        "timezone": _field(st.sampled_from(["UTC", "Asia/Tokyo", "America/New_York"]), ["Mars/Base", "utc"]),
        "scheduled_time": _field(st.datetimes(dt.datetime(1970, 1, 2), NEAR_FUTURE).map(str), _TIMES),
        "title": _field(_NAMES, _ODD_TEXT),
        "data": _field(st.dictionaries(st.text(max_size=3), _ANY_JSON, max_size=3), [{"big": "x" * 5000}]),
        "ttl": _field(st.integers(0, schemas.MAX_TTL), [-1, schemas.MAX_TTL + 1, 60.0, "60"]),
        "urgency": _field(st.sampled_from(models.URGENCIES), ["urgent", "HIGH"]),
        "collapse_key": _field(
            st.text("abcXYZ019-_", min_size=1, max_size=32), ["", "k" * 33, "a b", "ü", "a=", "a\n"]
        ),
    },
)


def marshmallow_load(schema, body):
    """The schema's own load, without the quick path PushRequest.load tries first."""
    return Schema.load(schema, body)


@given(body=_PUSH_BODIES)
@settings(max_examples=400, deadline=None, database=None)
def test_a_batch_push_item_loads_as_the_schema_loads_it(body):
    """plain_push, the quick path, gives marshmallow's result or declines, never another answer."""
    app = Flask(__name__)
    app.config.update(MAX_DATA_BYTES=4096, MAX_DATA_DEPTH=5, DEFAULT_TIMEZONE="UTC")
    with app.app_context():
        quick = schemas.plain_push(dict(body))
        try:
            loaded = marshmallow_load(schemas.PushRequest(), dict(body))
        except ValidationError:
            assert quick is None
        else:
            assert quick is None or quick == loaded


@pytest.mark.parametrize(
    "body",
    [
        PUSH,
        {**PUSH, "title": "t", "data": {"order": [1, {"a": None}]}, "timezone": "Asia/Tokyo"},
        {**PUSH, "scheduled_time": "2030-01-01T23:00:00", "title": None, "data": None},
        {**PUSH, "recipient_id": "ünïcode", "content": "ç" * 10_000, "scheduled_time": None},
        {**PUSH, "ttl": 0, "urgency": "high", "collapse_key": "order-42"},
    ],
)
def test_usual_push_items_take_the_quick_path(app, body):
    with app.app_context():
        assert schemas.plain_push(dict(body)) == marshmallow_load(schemas.PushRequest(), dict(body))


@pytest.mark.parametrize(
    "bad",
    [
        {"content": ""},
        {"recipient_id": "a\nb"},
        {"recipient_id": "   "},
        {"timezone": "Mars/Base"},
        {"scheduled_time": "1969-12-31T23:59:59"},
        {"scheduled_time": "soon"},
        {"title": "t" * 256},
        {"data": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}},
        {"data": [1]},
        {"colour": "red"},
        {"ttl": 2419201},
        {"urgency": "urgent"},
        {"collapse_key": "has space"},
    ],
)
def test_a_bad_push_item_in_a_batch_gets_the_single_requests_errors(app, client, bad):
    single = post(client, "push", **{**PUSH, **bad})
    items = [{"channel": "push", **PUSH}, {"channel": "push", **{**PUSH, **bad}}]
    batch = client.post("/notifications/batch", json={"notifications": items})
    assert single.status_code == batch.status_code == 422
    assert batch.json["errors"]["json"] == {"notifications": {"1": single.json["errors"]["json"]}}
    with app.app_context():
        assert models.Notification.select().count() == 0


_USUAL_PUSH = st.fixed_dictionaries(
    {"recipient_id": _NAMES, "content": _NAMES},
    optional={
        "timezone": st.sampled_from(["UTC", "Asia/Tokyo", "America/New_York"]),
        "scheduled_time": st.datetimes(dt.datetime(1970, 1, 2), NEAR_FUTURE).map(dt.datetime.isoformat),
        "title": _NAMES | st.none(),
        "data": st.dictionaries(st.text(max_size=3), _ANY_JSON, max_size=3),
        "ttl": st.integers(0, schemas.MAX_TTL),
        "urgency": st.sampled_from(models.URGENCIES),
        "category": st.sampled_from(["marketing", "security.alerts"]),
    },
)
_EMAIL_BODIES = st.fixed_dictionaries(
    {"recipient_id": _field(st.just("user@example.com"), _ODD_TEXT), "content": _field(_NAMES, _ODD_TEXT)},
    optional={"subject": _field(_NAMES, _ODD_TEXT), "timezone": st.sampled_from(["UTC", "Mars/Base"])},
)
_USUAL_ITEMS = st.one_of(
    _USUAL_PUSH.map(lambda body: {"channel": "push", **body}),
    _USUAL_PUSH.map(lambda body: {**body, "channel": "push"}),
    st.just({"channel": "email", **EMAIL}),
)
_ODD_ITEMS = st.one_of(
    _PUSH_BODIES.map(lambda body: {"channel": "push", **body}),
    _EMAIL_BODIES.map(lambda body: {"channel": "email", **body}),
    _USUAL_PUSH.map(lambda body: {**body, "channel": "sms"}),
    st.sampled_from([1, None, [PUSH], {**PUSH}]),
)
# Most batches hold only usual items, which the quick path takes: both answers are then compared.
_BATCHES = st.one_of(
    st.fixed_dictionaries({"notifications": st.lists(_USUAL_ITEMS, min_size=1, max_size=3)}),
    st.fixed_dictionaries({"notifications": st.lists(_USUAL_ITEMS | _ODD_ITEMS, max_size=3)}),
    st.fixed_dictionaries({"notifications": st.lists(_USUAL_ITEMS, max_size=2), "extra": st.just(1)}),
    st.sampled_from([{}, {"notifications": {"0": PUSH}}, {"notifications": None}]),
)


@given(body=_BATCHES)
@settings(max_examples=400, deadline=None, database=None)
def test_a_batch_loads_as_the_schema_loads_it(body):
    """plain_batch, the batch's quick path, gives marshmallow's result or declines, never another answer.

    marshmallow's own here is without any quick path, its items' included.
    """
    app = Flask(__name__)
    app.config.update(MAX_DATA_BYTES=4096, MAX_DATA_DEPTH=5, DEFAULT_TIMEZONE="UTC")
    with app.app_context(), mock.patch.object(schemas.PushRequest, "quick_load", lambda self, data: None):
        quick = schemas.plain_batch(copy.deepcopy(body))
        try:
            loaded = marshmallow_load(schemas.BatchRequest(), copy.deepcopy(body))
        except ValidationError:
            assert quick is None
        else:
            assert quick is None or quick == loaded


def test_a_usual_batch_takes_the_quick_path(app):
    items = [
        {"channel": "push", **PUSH, "scheduled_time": "2030-01-01T23:00:00+02:00", "title": "t"},
        {"channel": "email", **EMAIL},
        {"channel": "push", **PUSH, "data": {"order": 42}, "timezone": "Asia/Tokyo"},
    ] * 300
    with app.app_context():
        quick = schemas.plain_batch({"notifications": copy.deepcopy(items)})
        assert quick is not None
        assert quick == marshmallow_load(schemas.BatchRequest(), {"notifications": items})


@pytest.mark.parametrize(
    "notifications",
    [
        [{"channel": "push", **PUSH}] * 1001,
        [],
        [{"channel": "push", **PUSH}, {"channel": "email", "recipient_id": "user@example.com"}],
        [{"channel": "push", **PUSH}, {"channel": "push", **PUSH, "ttl": -1}],
    ],
)
def test_the_quick_path_declines_what_the_schema_refuses(app, notifications):
    with app.app_context():
        assert schemas.plain_batch({"notifications": notifications}) is None


def test_batch_over_1000_is_rejected(client):
    items = [{"channel": "push", **PUSH}] * 1001
    response = client.post("/notifications/batch", json={"notifications": items})
    assert response.status_code == 422
    assert "notifications" in response.json["errors"]["json"]
