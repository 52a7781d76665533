"""Providers against real local servers: what gets delivered, and which failures are worth a retry."""

from __future__ import annotations

import json
import mailbox
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

import settings
from actors.providers import (
    PermanentDeliveryError,
    TransientDeliveryError,
    provider_for,
)
from actors.providers.outbox import JsonLinesOutbox, MaildirOutbox
from actors.providers.smtp import SmtpProvider
from actors.providers.webhook import WebhookProvider, parse_retry_after
from harness.factories import email_envelope, push_envelope
from harness.network import free_port
from harness.receivers import PushReceiver, SmtpReceiver

SENDER = "Notifications <notify@example.org>"


def run_in_threads(count: int, target) -> None:
    """Run ``target(index)`` on ``count`` threads released together; re-raise the first failure."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        barrier.wait()
        try:
            target(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


@pytest.fixture
def smtp(smtp_server: SmtpReceiver) -> SmtpProvider:
    return SmtpProvider(smtp_server.url, SENDER, timeout=5)


@pytest.fixture
def push_server() -> Iterator[PushReceiver]:
    with PushReceiver() as receiver:
        yield receiver


@pytest.fixture
def webhook(push_server: PushReceiver) -> Iterator[WebhookProvider]:
    provider = WebhookProvider(push_server.url, timeout=5)
    yield provider
    provider.close()


# --- SMTP ---------------------------------------------------------------------------------------------


def test_smtp_delivers_from_to_subject_and_body(smtp: SmtpProvider, smtp_server: SmtpReceiver) -> None:
    smtp.deliver(email_envelope())

    [received] = smtp_server.wait_for(1)
    message = received.message
    assert message["From"] == SENDER
    assert message["To"] == "alice@example.com"
    assert message["Subject"] == "Order update"
    assert message["Date"]
    assert message.get_content().strip() == "Your order has shipped."
    assert received.mail_from == "notify@example.org"
    assert received.rcpt_tos == ["alice@example.com"]
    assert not received.tls


def test_smtp_message_id_is_stable_across_resends(smtp: SmtpProvider, smtp_server: SmtpReceiver) -> None:
    smtp.deliver(email_envelope("n-42"))
    smtp.deliver(email_envelope("n-42"))
    smtp.deliver(email_envelope("n-43"))

    first, resent, other = smtp_server.wait_for(3)
    assert first.message["Message-ID"] == "<n-42@example.org>"
    assert resent.message["Message-ID"] == first.message["Message-ID"]
    assert other.message["Message-ID"] == "<n-43@example.org>"


def test_smtp_missing_subject_defaults_to_notification(smtp: SmtpProvider, smtp_server: SmtpReceiver) -> None:
    smtp.deliver(email_envelope(subject=None))

    [received] = smtp_server.wait_for(1)
    assert received.message["Subject"] == "Notification"


def test_smtp_subject_newlines_cannot_inject_headers(smtp: SmtpProvider, smtp_server: SmtpReceiver) -> None:
    smtp.deliver(email_envelope(subject="Hello\r\nBcc: evil@example.com\n\x0bX-Evil: 1"))

    [received] = smtp_server.wait_for(1)
    assert received.message["Bcc"] is None
    assert received.message["X-Evil"] is None
    assert received.message["Subject"] == "Hello Bcc: evil@example.com X-Evil: 1"
    assert smtp_server.rcpts == ["alice@example.com"]


def test_smtp_recipient_with_newline_is_permanent_and_never_sent(
    smtp: SmtpProvider, smtp_server: SmtpReceiver
) -> None:
    with pytest.raises(PermanentDeliveryError):
        smtp.deliver(email_envelope(recipient_id="alice@example.com\r\nRCPT TO:<evil@example.com>"))
    with pytest.raises(PermanentDeliveryError):
        smtp.deliver(email_envelope(recipient_id="alice@example.com, evil@example.com"))

    assert smtp_server.rcpts == []


def test_smtp_4xx_is_transient(smtp: SmtpProvider, smtp_server: SmtpReceiver) -> None:
    smtp_server.reject_next(451, "Try again later")

    with pytest.raises(TransientDeliveryError) as caught:
        smtp.deliver(email_envelope())

    assert "451" in caught.value.reason
    assert "Try again later" in caught.value.reason


def test_smtp_5xx_is_permanent(smtp: SmtpProvider, smtp_server: SmtpReceiver) -> None:
    smtp_server.reject_next(550, "No such user")

    with pytest.raises(PermanentDeliveryError) as caught:
        smtp.deliver(email_envelope())

    assert "550" in caught.value.reason
    assert "No such user" in caught.value.reason
    assert not caught.value.transient


@pytest.mark.parametrize(("code", "error"), [(452, TransientDeliveryError), (554, PermanentDeliveryError)])
def test_smtp_rejection_at_data_is_classified_by_code(
    smtp: SmtpProvider, smtp_server: SmtpReceiver, code: int, error: type[Exception]
) -> None:
    smtp_server.reject_next(code, "Message refused", stage="DATA")

    with pytest.raises(error, match=str(code)):
        smtp.deliver(email_envelope())

    assert smtp_server.messages == []


def test_smtp_next_delivery_succeeds_after_a_rejection(smtp: SmtpProvider, smtp_server: SmtpReceiver) -> None:
    smtp_server.reject_next(451, "Greylisted", times=2)

    for _ in range(2):
        with pytest.raises(TransientDeliveryError):
            smtp.deliver(email_envelope())
    smtp.deliver(email_envelope())

    assert len(smtp_server.wait_for(1)) == 1


def test_smtp_connection_refused_is_transient() -> None:
    provider = SmtpProvider(f"smtp://127.0.0.1:{free_port()}", SENDER, timeout=5)

    with pytest.raises(TransientDeliveryError):
        provider.deliver(email_envelope())


def test_smtp_starttls_with_login_delivers() -> None:
    with SmtpReceiver(starttls=True, auth=("mailer", "p@ss:w/rd")) as server:
        url = server.url.replace("://", "://mailer:p%40ss%3Aw%2Frd@")
        provider = SmtpProvider(url, SENDER, timeout=5, ssl_context=server.ssl_context)

        provider.deliver(email_envelope())

        [received] = server.wait_for(1)
        assert received.tls
        assert received.message["Subject"] == "Order update"
        assert server.logins == [("mailer", "p@ss:w/rd")]


def test_smtp_wrong_password_is_permanent() -> None:
    with SmtpReceiver(starttls=True, auth=("mailer", "secret")) as server:
        url = server.url.replace("://", "://mailer:wrong@")
        provider = SmtpProvider(url, SENDER, timeout=5, ssl_context=server.ssl_context)

        with pytest.raises(PermanentDeliveryError, match="535"):
            provider.deliver(email_envelope())

        assert server.messages == []


def test_smtp_untrusted_certificate_is_transient() -> None:
    with SmtpReceiver(starttls=True) as server:
        # The default context does not trust the receiver's self-signed certificate.
        provider = SmtpProvider(server.url, SENDER, timeout=5)

        with pytest.raises(TransientDeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
            provider.deliver(email_envelope())


def test_smtps_implicit_tls_delivers() -> None:
    with SmtpReceiver(implicit_tls=True) as server:
        provider = SmtpProvider(server.url, SENDER, timeout=5, ssl_context=server.ssl_context)

        provider.deliver(email_envelope())

        [received] = server.wait_for(1)
        assert received.tls


def test_smtp_is_safe_from_several_threads(smtp: SmtpProvider, smtp_server: SmtpReceiver) -> None:
    run_in_threads(8, lambda i: [smtp.deliver(email_envelope(f"n-{i}-{j}")) for j in range(3)])

    received = smtp_server.wait_for(24)
    assert len({r.message["Message-ID"] for r in received}) == 24


# --- Webhook ------------------------------------------------------------------------------------------


def test_webhook_2xx_delivers_exact_payload_and_headers(
    webhook: WebhookProvider, push_server: PushReceiver
) -> None:
    webhook.deliver(push_envelope("p-7"))

    [request] = push_server.wait_for(1)
    assert request.path == "/push"
    assert request.body == {
        "notification_id": "p-7",
        "recipient_id": "user-42",
        "content": "Your order has shipped.",
        "title": "Order update",
        "data": {"order": 7, "tags": ["a", "ü"]},
    }
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == "p-7"
    assert request.headers["User-Agent"] == "notification-service"


@pytest.mark.parametrize("status", [201, 202, 204])
def test_webhook_any_2xx_is_delivered(
    webhook: WebhookProvider, push_server: PushReceiver, status: int
) -> None:
    push_server.script(status)

    webhook.deliver(push_envelope())

    assert len(push_server.wait_for(1)) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 429, 408])
def test_webhook_server_errors_and_throttling_are_transient(
    webhook: WebhookProvider, push_server: PushReceiver, status: int
) -> None:
    push_server.script(status)

    with pytest.raises(TransientDeliveryError, match=str(status)) as caught:
        webhook.deliver(push_envelope())

    assert caught.value.retry_after is None


def test_webhook_429_retry_after_seconds(webhook: WebhookProvider, push_server: PushReceiver) -> None:
    push_server.script((429, {"Retry-After": "7"}))

    with pytest.raises(TransientDeliveryError) as caught:
        webhook.deliver(push_envelope())

    assert caught.value.retry_after == 7


def test_webhook_503_retry_after_http_date(webhook: WebhookProvider, push_server: PushReceiver) -> None:
    later = datetime.now(UTC) + timedelta(seconds=120)
    push_server.script((503, {"Retry-After": format_datetime(later, usegmt=True)}))

    with pytest.raises(TransientDeliveryError) as caught:
        webhook.deliver(push_envelope())

    assert caught.value.retry_after is not None
    assert 100 < caught.value.retry_after <= 120


def test_webhook_garbage_retry_after_is_ignored(webhook: WebhookProvider, push_server: PushReceiver) -> None:
    push_server.script((503, {"Retry-After": "soon-ish"}))

    with pytest.raises(TransientDeliveryError) as caught:
        webhook.deliver(push_envelope())

    assert caught.value.retry_after is None


def test_retry_after_parsing() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7", now) == 7
    assert parse_retry_after(" 0 ", now) == 0
    assert parse_retry_after("Wed, 01 May 2024 12:00:30 GMT", now) == 30
    assert parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", now) == 0  # already past
    for garbage in (None, "", "-5", "1.5", "9" * 40, "tomorrow", "Wed, 99 Foo 2024"):
        assert parse_retry_after(garbage, now) is None


@pytest.mark.parametrize("status", [400, 404, 410, 301])
def test_webhook_client_errors_are_permanent(
    webhook: WebhookProvider, push_server: PushReceiver, status: int
) -> None:
    push_server.script((status, {"Content-Type": "text/plain"}, b"bad token: " + b"x" * 500))

    with pytest.raises(PermanentDeliveryError) as caught:
        webhook.deliver(push_envelope())

    assert str(status) in caught.value.reason
    assert "bad token: xxx" in caught.value.reason
    assert len(caught.value.reason) < 300  # only the start of the body


def test_webhook_slow_endpoint_is_transient() -> None:
    with PushReceiver(delay=30) as server:
        provider = WebhookProvider(server.url, timeout=0.2)
        try:
            with pytest.raises(TransientDeliveryError, match="timed out"):
                provider.deliver(push_envelope())
            assert len(server.wait_for(1)) == 1
        finally:
            provider.close()


def test_webhook_connection_refused_is_transient() -> None:
    provider = WebhookProvider(f"http://127.0.0.1:{free_port()}/push", timeout=5)

    with pytest.raises(TransientDeliveryError):
        provider.deliver(push_envelope())


def test_webhook_reuses_its_keep_alive_connection(
    webhook: WebhookProvider, push_server: PushReceiver
) -> None:
    for i in range(5):
        webhook.deliver(push_envelope(f"p-{i}"))

    assert len(push_server.wait_for(5)) == 5
    assert push_server.unique_ids() == 5
    assert push_server.connections == 1


def test_webhook_keeps_its_connection_after_an_error_status(
    webhook: WebhookProvider, push_server: PushReceiver
) -> None:
    push_server.script(503, 404)
    with pytest.raises(TransientDeliveryError):
        webhook.deliver(push_envelope())
    with pytest.raises(PermanentDeliveryError):
        webhook.deliver(push_envelope())
    webhook.deliver(push_envelope())

    assert len(push_server.wait_for(3)) == 3
    assert push_server.connections == 1


def test_webhook_reconnects_when_the_server_closed_the_kept_alive_connection() -> None:
    with PushReceiver(close_after_response=True) as server:
        provider = WebhookProvider(server.url, timeout=5)
        try:
            for i in range(4):
                provider.deliver(push_envelope(f"p-{i}"))
        finally:
            provider.close()

        requests = server.wait_for(4)
        assert [r.headers["Idempotency-Key"] for r in requests] == ["p-0", "p-1", "p-2", "p-3"]
        assert server.connections == 4


def test_webhook_reconnects_after_a_timeout() -> None:
    with PushReceiver(delay=30) as server:
        provider = WebhookProvider(server.url, timeout=0.2)
        try:
            with pytest.raises(TransientDeliveryError):
                provider.deliver(push_envelope())
            server.delay = 0
            provider.deliver(push_envelope())
        finally:
            provider.close()

        assert len(server.wait_for(2)) == 2
        assert server.connections == 2


def test_webhook_keeps_one_connection_per_thread(webhook: WebhookProvider, push_server: PushReceiver) -> None:
    run_in_threads(8, lambda i: [webhook.deliver(push_envelope(f"p-{i}-{j}")) for j in range(5)])

    assert len(push_server.wait_for(40)) == 40
    assert push_server.unique_ids() == 40
    assert push_server.connections == 8


def test_webhook_url_credentials_become_basic_auth(push_server: PushReceiver) -> None:
    url = push_server.url.replace("://", "://hook:s%40cret@")
    provider = WebhookProvider(url, timeout=5)
    try:
        provider.deliver(push_envelope())
    finally:
        provider.close()

    [request] = push_server.wait_for(1)
    assert request.headers["Authorization"] == "Basic aG9vazpzQGNyZXQ="  # hook:s@cret
    assert "s%40cret" not in repr(provider)


def test_webhook_https_delivers() -> None:
    with PushReceiver(tls=True) as server:
        provider = WebhookProvider(server.url, timeout=5, ssl_context=server.ssl_context)
        try:
            provider.deliver(push_envelope())
            provider.deliver(push_envelope())
        finally:
            provider.close()

        assert server.url.startswith("https://")
        assert len(server.wait_for(2)) == 2
        assert server.connections == 1


# --- Outbox -------------------------------------------------------------------------------------------


def test_outbox_maildir_gets_the_email_with_its_message_id(tmp_path) -> None:
    outbox = MaildirOutbox(str(tmp_path / "outbox"), sender=SENDER)

    outbox.deliver(email_envelope("n-9", subject="Hi\r\nBcc: evil@example.com"))

    [message] = list(mailbox.Maildir(tmp_path / "outbox" / "email", create=False))
    assert message["Message-ID"] == "<n-9@example.org>"
    assert message["To"] == "alice@example.com"
    assert message["Subject"] == "Hi Bcc: evil@example.com"
    assert message["Bcc"] is None
    assert message.get_payload().strip() == "Your order has shipped."


def test_outbox_push_jsonl_gets_one_line_per_delivery(tmp_path) -> None:
    outbox = JsonLinesOutbox(str(tmp_path / "outbox"))

    outbox.deliver(push_envelope("p-1"))
    outbox.deliver(push_envelope("p-2", content="two\nlines\u2028and more"))

    lines = (tmp_path / "outbox" / "push.jsonl").read_text().splitlines()
    first, second = (json.loads(line) for line in lines)
    assert first | {"delivered_at": None} == {
        "notification_id": "p-1",
        "recipient_id": "user-42",
        "content": "Your order has shipped.",
        "title": "Order update",
        "data": {"order": 7, "tags": ["a", "ü"]},
        "delivered_at": None,
    }
    assert datetime.fromisoformat(first["delivered_at"]).tzinfo is not None
    assert second["content"] == "two\nlines\u2028and more"


def test_outbox_push_jsonl_concurrent_writes_never_interleave(tmp_path) -> None:
    outbox = JsonLinesOutbox(str(tmp_path))
    big = "x" * 20_000  # larger than a pipe buffer, so a torn write would show

    run_in_threads(8, lambda i: [outbox.deliver(push_envelope(f"p-{i}-{j}", content=big)) for j in range(25)])

    with open(tmp_path / "push.jsonl", "rb") as file:
        records = [json.loads(line) for line in file]
    assert len(records) == 200
    assert {r["notification_id"] for r in records} == {f"p-{i}-{j}" for i in range(8) for j in range(25)}


# --- Choosing a provider ------------------------------------------------------------------------------


@pytest.mark.skipif(bool(settings.SMTP_URL or settings.PUSH_WEBHOOK_URL), reason="provider URLs are set")
def test_provider_for_uses_the_outbox_when_no_urls_are_set() -> None:
    email, push = provider_for("email"), provider_for("push")

    assert isinstance(email, MaildirOutbox)
    assert isinstance(push, JsonLinesOutbox)
    assert email.name == push.name == "outbox"
    assert provider_for("email") is email
    assert provider_for("push") is push


def test_provider_for_rejects_an_unknown_channel() -> None:
    with pytest.raises(ValueError, match="sms"):
        provider_for("sms")


def test_provider_names() -> None:
    assert SmtpProvider("smtp://localhost", SENDER, timeout=1).name == "smtp"
    assert WebhookProvider("http://localhost/", timeout=1).name == "webhook"


@pytest.mark.parametrize(
    ("url", "port"),
    [("smtp://h", 25), ("smtp+starttls://h", 587), ("smtps://h", 465), ("smtp://h:2525", 2525)],
)
def test_smtp_url_ports(url: str, port: int) -> None:
    assert SmtpProvider(url, SENDER, timeout=1).port == port


@pytest.mark.parametrize("url", ["http://h", "smtp://", "smtp:///path"])
def test_smtp_bad_url_is_rejected(url: str) -> None:
    with pytest.raises(ValueError):
        SmtpProvider(url, SENDER, timeout=1)
