"""Templates: stored by name, checked when stored, rendered per locale when a notification is accepted."""

from __future__ import annotations

import pytest

import storage
from api import create_app
from storage import models, queries

ORDER = {
    "channel": "email",
    "default_locale": "en",
    "locales": {
        "en": {
            "subject": "Your order {{ order.id }}",
            "text": "Hi {{ name }}, order {{ order.id }} has shipped.",
            "html": "<p>Hi {{ name }}</p>",
        },
        "pl": {"subject": "Zamówienie {{ order.id }}", "text": "Cześć {{ name }}, zamówienie wysłane."},
    },
}
PING = {
    "channel": "push",
    "default_locale": "en",
    "locales": {"en": {"title": "Hi {{ name }}", "text": "Ping"}},
}
VARIABLES = {"name": "Ann", "order": {"id": 7}}


@pytest.fixture
def app(database_url):
    app = create_app({"TESTING": True, "DATABASE_URL": database_url, "RUN_WORKERS": False})
    with app.app_context():
        models.Template.delete().execute()
    yield app
    storage.db.close()


@pytest.fixture
def client(app):
    return app.test_client()


def put(client, name, body):
    return client.put(f"/templates/{name}", json=body)


def email(client, **body):
    return client.post("/notifications/email", json={"recipient_id": "ann@example.com", **body})


def accepted(app, client, channel="email", **body):
    recipient = "ann@example.com" if channel == "email" else "user-1"
    response = client.post(f"/notifications/{channel}", json={"recipient_id": recipient, **body})
    assert response.status_code == 202, response.json
    with app.app_context():
        return queries.get(response.json["notification_id"])


# --- The resource --------------------------------------------------------------------------------------


def test_put_creates_then_replaces(client):
    created = put(client, "order.shipped_v2-x", ORDER)
    assert created.status_code == 201
    assert created.json["name"] == "order.shipped_v2-x"
    assert created.json["locales"] == ORDER["locales"]

    replaced = put(client, "order.shipped_v2-x", PING)
    assert replaced.status_code == 200
    assert replaced.json["channel"] == "push"
    assert client.get("/templates/order.shipped_v2-x").json["locales"] == PING["locales"]


def test_get_and_delete_an_unknown_template_are_404(client):
    assert client.get("/templates/nope").status_code == 404
    assert client.delete("/templates/nope").status_code == 404


def test_delete_leaves_accepted_notifications_as_rendered(app, client):
    put(client, "order", ORDER)
    notification = accepted(app, client, template="order", variables=VARIABLES)

    assert client.delete("/templates/order").status_code == 204
    assert client.get("/templates/order").status_code == 404
    with app.app_context():
        assert queries.get(notification.id).content == "Hi Ann, order 7 has shipped."
    assert email(client, template="order", variables=VARIABLES).json["errors"]["json"] == {
        "template": ["No template named 'order'."]
    }


def test_a_later_edit_does_not_change_what_was_accepted(app, client):
    put(client, "order", ORDER)
    notification = accepted(app, client, template="order", variables=VARIABLES)
    put(client, "order", {**ORDER, "locales": {"en": {"text": "Changed"}}})

    with app.app_context():
        assert queries.get(notification.id).content == "Hi Ann, order 7 has shipped."


def test_the_list_is_by_name_with_count_and_paging(client):
    for name in ("c", "a", "b"):
        put(client, name, PING)

    page = client.get("/templates?limit=2&offset=1").json
    assert page["count"] == 3
    assert [t["name"] for t in page["templates"]] == ["b", "c"]
    assert client.get("/templates?limit=0").status_code == 422


@pytest.mark.parametrize("name", ["Order", "a b", "x" * 101, "ü", "a%2Fb"])
def test_a_name_outside_the_alphabet_is_a_422(client, name):
    response = put(client, name, PING)

    assert response.status_code in (404, 422)  # a slash is another path
    if response.status_code == 422:
        assert "name" in response.json["errors"]["json"]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({**PING, "channel": "sms"}, ["channel"]),
        ({**PING, "default_locale": "de"}, ["default_locale"]),
        ({**PING, "locales": {}}, ["locales"]),
        ({**PING, "locales": {"en": {"title": "x"}}}, ["locales", "en", "text"]),
        ({**PING, "locales": {"en": {"text": "x", "subject": "y"}}}, ["locales", "en", "subject"]),
        ({**ORDER, "locales": {"en": {"text": "x", "title": "y"}}}, ["locales", "en", "title"]),
        ({**PING, "locales": {"en us": {"text": "x"}}, "default_locale": "en"}, ["locales"]),
    ],
)
def test_a_bad_template_is_a_422_naming_where(client, body, where):
    response = put(client, "t", body)

    assert response.status_code == 422
    errors = response.json["errors"]["json"]
    for key in where:
        errors = errors[key]
    assert client.get("/templates/t").status_code == 404


def test_a_template_that_does_not_compile_names_locale_field_and_line(client):
    body = {**ORDER, "locales": {**ORDER["locales"], "pl": {"text": "ok\nline two {{ name }\n"}}}

    response = put(client, "order", body)

    assert response.status_code == 422
    [message] = response.json["errors"]["json"]["locales"]["pl"]["text"]
    assert message.startswith("line 2: ")


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ name.__class__ }}",
        "{{ name['__class__'] }}",
        "{{ cycler.__init__ }}",
    ],
)
def test_reaching_for_private_attributes_is_refused_when_stored(client, source):
    response = put(client, "evil", {**PING, "locales": {"en": {"text": source}}})

    assert response.status_code == 422
    assert "not allowed" in response.json["errors"]["json"]["locales"]["en"]["text"][0]


# --- Rendering at accept -------------------------------------------------------------------------------


def test_the_default_locale_is_rendered_and_stored_with_the_template(app, client):
    put(client, "order", ORDER)

    notification = accepted(app, client, template="order", variables=VARIABLES)

    assert notification.content == "Hi Ann, order 7 has shipped."
    assert notification.subject == "Your order 7"
    assert notification.html == "<p>Hi Ann</p>"
    assert (notification.template, notification.locale) == ("order", "en")
    shown = client.get(f"/notifications/{notification.id}").json
    assert (shown["template"], shown["locale"], shown["content"]) == ("order", "en", notification.content)


@pytest.mark.parametrize(
    ("requested", "used"),
    [("pl", "pl"), ("pl-PL", "pl"), ("PL_pl", "pl"), ("de-DE", "en"), ("en-GB", "en"), (None, "en")],
)
def test_the_locale_falls_back_from_region_to_language_to_default(app, client, requested, used):
    put(client, "order", ORDER)
    body = {"template": "order", "variables": VARIABLES} | ({"locale": requested} if requested else {})

    notification = accepted(app, client, **body)

    assert notification.locale == used
    assert notification.subject == ("Zamówienie 7" if used == "pl" else "Your order 7")
    assert notification.html == (None if used == "pl" else "<p>Hi Ann</p>")


def test_an_exact_regional_locale_wins_over_its_language(app, client):
    locales = {"pt": {"text": "Olá"}, "pt-BR": {"text": "Oi"}, "en": {"text": "Hi"}}
    put(client, "hello", {"channel": "push", "default_locale": "en", "locales": locales})

    assert accepted(app, client, "push", template="hello", locale="pt-BR").content == "Oi"
    assert accepted(app, client, "push", template="hello", locale="pt-PT").content == "Olá"


def test_html_is_autoescaped_and_the_text_parts_are_not(app, client):
    put(client, "order", ORDER)

    notification = accepted(
        app, client, template="order", variables={"name": "<b>A&B</b>", "order": {"id": 1}}
    )

    assert notification.html == "<p>Hi &lt;b&gt;A&amp;B&lt;/b&gt;</p>"
    assert notification.content == "Hi <b>A&B</b>, order 1 has shipped."


def test_a_push_template_renders_title_and_text(app, client):
    put(client, "ping", PING)

    notification = accepted(app, client, "push", template="ping", variables={"name": "Ann"}, data={"k": 1})

    assert (notification.title, notification.content, notification.data) == ("Hi Ann", "Ping", {"k": 1})


def test_a_missing_variable_is_a_422_naming_it_and_where(app, client):
    put(client, "order", ORDER)

    response = email(client, template="order", variables={"order": {"id": 7}})

    assert response.status_code == 422
    [message] = response.json["errors"]["json"]["variables"]
    assert "'name' is undefined" in message
    assert "locale en, subject" not in message and "locale en, text, line 1" in message
    with app.app_context():
        assert models.Notification.select().count() == 0


def test_a_missing_attribute_of_a_variable_is_a_422(client):
    put(client, "order", ORDER)

    response = email(client, template="order", variables={"name": "Ann", "order": {}})

    assert response.status_code == 422
    assert "id" in response.json["errors"]["json"]["variables"][0]


def test_a_render_error_is_a_422_naming_the_line(client):
    put(client, "div", {**PING, "locales": {"en": {"text": "a\n{{ 1 // n }}"}}})

    response = client.post(
        "/notifications/push", json={"recipient_id": "u", "template": "div", "variables": {"n": 0}}
    )

    assert response.status_code == 422
    assert "line 2" in response.json["errors"]["json"]["variables"][0]


@pytest.mark.parametrize(
    "variables",
    [{"key": "__class__"}, {"key": "__init__"}],
)
def test_sandbox_escapes_through_variables_are_refused_at_render(app, client, variables):
    put(client, "dyn", {**PING, "locales": {"en": {"text": "{{ (name|attr(key)) }}"}}})

    response = client.post(
        "/notifications/push",
        json={"recipient_id": "u", "template": "dyn", "variables": {"name": "x", **variables}},
    )

    assert response.status_code == 422
    assert "not allowed" in response.json["errors"]["json"]["variables"][0]


@pytest.mark.parametrize(
    "source", ["{{ 'x' * 1000000000 }}", "{{ 2 ** 1000000000 }}", "{{ [1] * 999999999 }}"]
)
def test_a_template_cannot_ask_for_gigabytes(client, source):
    put(client, "big", {**PING, "locales": {"en": {"text": source}}})

    response = client.post("/notifications/push", json={"recipient_id": "u", "template": "big"})

    assert response.status_code == 422
    assert "not allowed" in response.json["errors"]["json"]["variables"][0]


LONG = {
    "channel": "email",
    "default_locale": "en",
    "locales": {
        "en": {"subject": "{{ 's' * s }}", "text": "{{ 't' * t }}{{ nul }}", "html": "{{ 'h' * h }}"},
        "pl": {"text": "{{ 't' * t }}"},
    },
}
FITS = {"s": 255, "t": 10_000, "h": 100_000, "nul": ""}


@pytest.mark.parametrize(
    ("locale", "variables", "field"),
    [
        ("en", {**FITS, "t": 10_001}, "content"),
        ("pl", {**FITS, "t": 10_001}, "content"),
        ("pl", {**FITS, "t": 0}, "content"),
        ("en", {**FITS, "s": 256}, "subject"),
        ("en", {**FITS, "h": 100_001}, "html"),
        ("en", {**FITS, "nul": "\x00"}, "content"),
    ],
)
def test_rendered_texts_obey_the_limits_of_content_subject_and_html(app, client, locale, variables, field):
    put(client, "long", LONG)
    assert email(client, template="long", variables=FITS, locale=locale).status_code == 202

    response = email(client, template="long", variables=variables, locale=locale)

    assert response.status_code == 422
    assert f"(locale {locale})" in response.json["errors"]["json"][field][0]
    with app.app_context():
        assert models.Notification.select().count() == 1


def test_a_rendered_push_title_obeys_its_limit(client):
    put(client, "ping", PING)

    response = client.post(
        "/notifications/push",
        json={"recipient_id": "u", "template": "ping", "variables": {"name": "x" * 300}},
    )

    assert response.status_code == 422
    assert "title" in response.json["errors"]["json"]


def test_a_rendered_subject_is_one_line(app, client):
    put(client, "order", ORDER)

    notification = accepted(
        app, client, template="order", variables={"name": "A", "order": {"id": "1\r\nBcc: x"}}
    )

    assert notification.subject == "Your order 1 Bcc: x"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "content"),
        ({"content": "x", "template": "order"}, "content"),
        ({"content": "x", "variables": {}}, "variables"),
        ({"content": "x", "locale": "pl"}, "locale"),
        ({"template": "order", "subject": "mine"}, "subject"),
        ({"template": "order", "html": "<p>mine</p>"}, "html"),
        ({"template": "Order!"}, "template"),
        ({"template": "order", "locale": "not a locale"}, "locale"),
        ({"template": "order", "variables": [1]}, "variables"),
        ({"template": "ping"}, "template"),  # a push template for an email
    ],
)
def test_exactly_one_of_content_and_template(app, client, body, field):
    put(client, "order", ORDER)
    put(client, "ping", PING)

    response = email(client, **body)

    assert response.status_code == 422
    assert field in response.json["errors"]["json"], response.json
    with app.app_context():
        assert models.Notification.select().count() == 0


def test_a_batch_renders_each_item_and_names_the_one_that_fails(app, client):
    put(client, "order", ORDER)
    good = {"channel": "email", "recipient_id": "a@example.com", "template": "order", "variables": VARIABLES}
    plain = {"channel": "push", "recipient_id": "u", "content": "plain"}

    response = client.post(
        "/notifications/batch", json={"notifications": [good, plain, {**good, "variables": {}}]}
    )
    assert response.status_code == 422
    assert "variables" in response.json["errors"]["json"]["notifications"]["2"]

    response = client.post(
        "/notifications/batch", json={"notifications": [good, plain, {**good, "locale": "pl"}]}
    )
    assert response.status_code == 202, response.json
    with app.app_context():
        stored = [queries.get(nid) for nid in response.json["notification_ids"]]
    assert [(n.template, n.locale, n.content) for n in stored] == [
        ("order", "en", "Hi Ann, order 7 has shipped."),
        (None, None, "plain"),
        ("order", "pl", "Cześć Ann, zamówienie wysłane."),
    ]


def test_every_templates_route_needs_a_key(tmp_path):
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path}/k.db",
            "RUN_WORKERS": False,
            "API_KEYS": ("k" * 20,),
        }
    )
    client = app.test_client()
    routes = [
        ("get", "/templates"),
        ("put", "/templates/a"),
        ("get", "/templates/a"),
        ("delete", "/templates/a"),
    ]
    for method, path in routes:
        assert getattr(client, method)(path, json=PING).status_code == 401, path

    key = {"Authorization": f"Bearer {'k' * 20}"}
    assert client.put("/templates/a", json=PING, headers=key).status_code == 201
    assert client.get("/templates/a", headers=key).status_code == 200
    assert client.get("/templates", headers=key).json["count"] == 1
    assert client.delete("/templates/a", headers=key).status_code == 204
    storage.db.close()


def test_the_templates_routes_are_in_the_openapi_spec(client):
    paths = client.get("/openapi.json").json["paths"]

    assert set(paths["/templates/{name}"]) >= {"put", "get", "delete"}
    assert "get" in paths["/templates"]
    assert paths["/templates/{name}"]["put"]["summary"] == "Create or replace a template"
    assert {"201", "200", "422"} <= set(paths["/templates/{name}"]["put"]["responses"])


def test_a_database_from_before_templates_gets_the_table_and_columns(database_url):
    database = storage.configure(database_url)
    with database.connection_context():
        database.execute_sql("ALTER TABLE notification DROP COLUMN template")
        database.execute_sql("ALTER TABLE notification DROP COLUMN locale")
        database.execute_sql("DROP TABLE template")
        database.execute_sql("DELETE FROM schema_version WHERE version > 7")
    storage.configure(database_url)
    with storage.db.connection_context():
        assert {"template", "locale"} <= {c.name for c in storage.db.get_columns("notification")}
        assert storage.db.table_exists("template")
