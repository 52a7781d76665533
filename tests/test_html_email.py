"""HTML email: an `html` part beside the text, stored, sent and written as multipart/alternative."""

from __future__ import annotations

import email.policy
import mailbox
from email.message import EmailMessage

import pytest

import storage
from actors.providers.outbox import MaildirOutbox
from actors.providers.smtp import SmtpProvider, build_message
from api import create_app
from harness import factories
from harness.factories import email_envelope
from harness.processes import Service
from harness.receivers import SmtpReceiver
from storage import models, queries, transitions

SENDER = "Notifications <notify@example.org>"
HTML = "<p>Your order <b>has shipped</b>.</p>"
EMAIL = {"recipient_id": "ann@example.com", "content": "Your order has shipped.", "subject": "Order"}


def parts(message: EmailMessage) -> list[tuple[str, str]]:
    """The message's parts, in order, as (content type, text without the line end SMTP adds)."""
    return [(part.get_content_type(), text(part)) for part in message.iter_parts()]


def text(part: EmailMessage) -> str:
    return part.get_content().replace("\r\n", "\n").removesuffix("\n")


@pytest.fixture
def app(database_url):
    app = create_app({"TESTING": True, "DATABASE_URL": database_url, "RUN_WORKERS": False})
    yield app
    storage.db.close()


def test_an_html_part_is_sent_as_multipart_alternative_text_first(smtp_server: SmtpReceiver) -> None:
    SmtpProvider(smtp_server.url, SENDER, timeout=5).deliver(email_envelope(html=HTML))

    [received] = smtp_server.wait_for(1)
    assert received.message.get_content_type() == "multipart/alternative"
    assert parts(received.message) == [
        ("text/plain", "Your order has shipped."),
        ("text/html", HTML),
    ]
    assert received.message["Subject"] == "Order update"


def test_without_html_the_email_stays_plain_text(smtp_server: SmtpReceiver) -> None:
    SmtpProvider(smtp_server.url, SENDER, timeout=5).deliver(email_envelope())

    [received] = smtp_server.wait_for(1)
    assert received.message.get_content_type() == "text/plain"
    assert not received.message.is_multipart()


def test_the_outbox_writes_the_message_smtp_sends(tmp_path, smtp_server: SmtpReceiver) -> None:
    envelope = email_envelope(html="<p>Zażółć <i>gęślą</i> jaźń</p>", content="Zażółć gęślą jaźń")
    MaildirOutbox(str(tmp_path), sender=SENDER).deliver(envelope)
    SmtpProvider(smtp_server.url, SENDER, timeout=5).deliver(envelope)

    [stored] = mailbox.Maildir(str(tmp_path / "email"), create=False)
    written = email.message_from_bytes(stored.as_bytes(), policy=email.policy.default)
    [received] = smtp_server.wait_for(1)
    assert isinstance(written, EmailMessage)
    assert written.get_content_type() == received.message.get_content_type() == "multipart/alternative"
    assert parts(written) == parts(received.message)
    assert parts(written)[1] == ("text/html", envelope.html)
    assert text(build_message(envelope, SENDER).get_body(("html",))) == envelope.html


def test_html_is_accepted_stored_and_shown(app) -> None:
    client = app.test_client()
    response = client.post("/notifications/email", json={**EMAIL, "html": HTML})
    assert response.status_code == 202, response.json
    nid = response.json["notification_id"]

    assert client.get(f"/notifications/{nid}").json["html"] == HTML
    with app.app_context():
        assert queries.get(nid).html == HTML


def test_html_in_a_batch_is_stored_on_both_write_paths(app) -> None:
    client = app.test_client()
    items = [{"channel": "email", **EMAIL, "html": f"<p>{i}</p>"} for i in range(3)]
    items.append({"channel": "email", **EMAIL})
    response = client.post("/notifications/batch", json={"notifications": items})
    assert response.status_code == 202, response.json
    with app.app_context():
        stored = [queries.get(nid).html for nid in response.json["notification_ids"]]
    assert stored == ["<p>0</p>", "<p>1</p>", "<p>2</p>", None]


@pytest.mark.parametrize(
    ("channel", "body"),
    [
        ("email", {**EMAIL, "html": ""}),
        ("email", {**EMAIL, "html": "x" * 100_001}),
        ("email", {**EMAIL, "html": "<p>\x00</p>"}),
        ("email", {**EMAIL, "html": 7}),
        ("push", {"recipient_id": "u", "content": "x", "html": HTML}),
    ],
)
def test_bad_html_is_a_422_naming_it_and_writes_nothing(app, channel, body) -> None:
    response = app.test_client().post(f"/notifications/{channel}", json=body)

    assert response.status_code == 422
    assert "html" in response.json["errors"]["json"]
    with app.app_context():
        assert models.Notification.select().count() == 0


def test_a_claimed_email_carries_its_html_to_the_provider(db) -> None:
    notification = factories.make("email", recipient_id="ann@example.com", html=HTML)
    (claimed,) = transitions.claim({str(notification.id): 0}, host="w", lease=60)

    assert claimed.html == HTML


def test_a_database_from_before_html_gets_the_column(database_url) -> None:
    database = storage.configure(database_url)
    with database.connection_context():
        factories.make("email", recipient_id="ann@example.com")
        database.execute_sql("ALTER TABLE notification DROP COLUMN html")
        database.execute_sql("DELETE FROM schema_version WHERE version > 6")
    storage.configure(database_url)
    with storage.db.connection_context():
        assert "html" in {c.name for c in storage.db.get_columns("notification")}
        (old,) = models.Notification.select()
        assert old.html is None
        assert factories.make("email", recipient_id="bo@example.com", html=HTML).html == HTML
        models.Notification.delete().execute()


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_html_email_end_to_end_is_read_back_multipart(
    tmp_path, fresh_postgres_url, rabbitmq_url, smtp_server
):
    running = Service(
        tmp_path, DATABASE_URL=fresh_postgres_url, BROKER_URL=rabbitmq_url, SMTP_URL=smtp_server.url
    )
    try:
        running.start_api()
        running.start_workers("email")
        nid = running.notify("email", **EMAIL, html=HTML)

        running.await_status(nid, "Delivered")
        [received] = smtp_server.wait_for(1)
        assert nid in received.message["Message-ID"]
        assert [t for t, _ in parts(received.message)] == ["text/plain", "text/html"]
        assert text(received.message.get_body(("html",))) == HTML

        # Rendered from a template: the same message, the HTML part autoescaped.
        locales = {"en": {"subject": "Hi {{ name }}", "text": "Hi {{ name }}", "html": "<p>{{ name }}</p>"}}
        template = {"channel": "email", "default_locale": "en", "locales": locales}
        assert running.request("PUT", "/templates/hello", template)[0] == 201
        rendered = running.notify(
            "email", recipient_id="ann@example.com", template="hello", variables={"name": "A<B"}
        )
        running.await_status(rendered, "Delivered")
        [_, mail] = smtp_server.wait_for(2)
        assert mail.message["Subject"] == "Hi A<B"
        assert parts(mail.message) == [("text/plain", "Hi A<B"), ("text/html", "<p>A&lt;B</p>")]
    except BaseException:
        print(running.logs())
        raise
    finally:
        running.close()
