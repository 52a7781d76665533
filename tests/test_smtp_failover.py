"""SMTP failover: several relays in SMTP_URL, the next tried at once when one fails transiently."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import storage
from actors.providers import PermanentDeliveryError, TransientDeliveryError
from actors.providers.smtp import SmtpFailover, SmtpProvider
from harness.factories import email_envelope
from harness.network import free_port
from harness.processes import Service
from harness.receivers import SmtpReceiver
from harness.waiting import wait_until
from storage import queries

SENDER = "Notifications <notify@example.org>"


@pytest.fixture
def relays() -> Iterator[tuple[SmtpReceiver, SmtpReceiver]]:
    with SmtpReceiver() as first, SmtpReceiver() as second:
        yield first, second


def failover(*urls: str) -> SmtpFailover:
    return SmtpFailover([SmtpProvider(url, SENDER, timeout=5) for url in urls])


def stopped_relay_url() -> str:
    """The address of an SMTP server that was running and is stopped: connections are refused."""
    with SmtpReceiver() as relay:
        url = relay.url
    return url


def test_the_first_relay_takes_the_message_when_it_can(relays) -> None:
    first, second = relays

    via = failover(first.url, second.url).deliver(email_envelope())

    assert via == first.url
    assert len(first.wait_for(1)) == 1 and second.messages == []


def test_a_stopped_relay_is_passed_over_for_the_next(relays) -> None:
    _, second = relays

    via = failover(stopped_relay_url(), second.url).deliver(email_envelope())

    assert via == second.url
    [received] = second.wait_for(1)
    assert received.rcpt_tos == ["alice@example.com"]


@pytest.mark.parametrize("stage", ["RCPT", "DATA"])
def test_a_4xx_on_one_relay_tries_the_next(relays, stage: str) -> None:
    first, second = relays
    first.reject_next(451, "4.3.0 try again later", stage=stage)

    via = failover(first.url, second.url).deliver(email_envelope())

    assert via == second.url
    assert first.messages == [] and len(second.wait_for(1)) == 1


@pytest.mark.parametrize("stage", ["RCPT", "DATA"])
def test_a_5xx_about_the_recipient_is_permanent_and_not_tried_elsewhere(relays, stage: str) -> None:
    first, second = relays
    first.reject_next(550, "5.1.1 no such user", stage=stage)

    with pytest.raises(PermanentDeliveryError, match="550") as caught:
        failover(first.url, second.url).deliver(email_envelope())

    assert first.url in caught.value.reason
    assert second.rcpts == [] and second.messages == []


def test_a_relay_refusing_our_login_is_passed_over(relays) -> None:
    _, second = relays
    with SmtpReceiver(starttls=True, auth=("mailer", "secret")) as guarded:
        wrong = SmtpProvider(
            guarded.url.replace("://", "://mailer:wrong@"), SENDER, timeout=5, ssl_context=guarded.ssl_context
        )
        provider = SmtpFailover([wrong, SmtpProvider(second.url, SENDER, timeout=5)])

        assert provider.deliver(email_envelope()) == second.url
        assert guarded.messages == []


def test_all_relays_failing_transiently_is_a_transient_failure_naming_each(relays) -> None:
    first, _ = relays
    first.reject_next(421, "4.7.0 busy")
    down = f"smtp://127.0.0.1:{free_port()}"

    with pytest.raises(TransientDeliveryError) as caught:
        failover(first.url, down).deliver(email_envelope())

    assert "421" in caught.value.reason and first.url in caught.value.reason
    assert down in caught.value.reason


def test_all_relays_refusing_us_is_permanent() -> None:
    with SmtpReceiver(starttls=True, auth=("mailer", "secret")) as guarded:
        url = guarded.url.replace("://", "://mailer:wrong@")
        relays = [SmtpProvider(url, SENDER, timeout=5, ssl_context=guarded.ssl_context) for _ in range(2)]

        with pytest.raises(PermanentDeliveryError, match="535"):
            SmtpFailover(relays).deliver(email_envelope())


def test_the_address_a_relay_is_named_by_carries_no_credentials() -> None:
    provider = SmtpProvider("smtp+starttls://mailer:secret@relay.example.org", SENDER, timeout=5)

    assert provider.address == "smtp+starttls://relay.example.org:587"
    assert "secret" not in repr(SmtpFailover([provider]))


# --- End to end: gunicorn, the workers, RabbitMQ and PostgreSQL ------------------------------------------


def delivered_via(database_url: str, notification_id: str) -> list[str | None]:
    storage.configure(database_url)
    with storage.db.connection_context():
        return [e.detail for e in queries.history(notification_id) if e.kind == "delivered"]


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_a_stopped_relay_costs_no_attempt_and_the_history_names_the_relay(
    tmp_path, fresh_postgres_url, rabbitmq_url, relays
) -> None:
    _, second = relays
    down = stopped_relay_url()
    running = Service(
        tmp_path,
        DATABASE_URL=fresh_postgres_url,
        BROKER_URL=rabbitmq_url,
        SMTP_URL=f"{down}, {second.url}",
        EMAIL_FROM="service@example.org",
        RETRY_DELAY="0.05",
        RETRY_MAX_DELAY="0.5",
        MAX_RETRY_ATTEMPTS="3",
    )
    try:
        running.start_api()
        workers = running.start_workers("email")
        nid = running.notify(
            "email", recipient_id="ann@example.com", content="Invoice ready", subject="Invoice"
        )

        assert running.await_status(nid, "Delivered")["attempt_count"] == 1
        [mail] = second.wait_for(1)
        assert nid in mail.message["Message-ID"]
        assert delivered_via(fresh_postgres_url, nid) == [second.url]
        # The worker's log is written by its child process: it may trail the database.
        delivered = f"Delivered {nid} via {second.url}"
        log = wait_until(lambda: delivered in running.log(workers) and running.log(workers), what=delivered)
        assert f"Relay {down} did not take {nid}" in log
    except BaseException:
        print(running.logs())
        raise
    finally:
        running.close()


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_all_relays_down_retries_the_attempt_until_one_is_back(
    tmp_path, fresh_postgres_url, rabbitmq_url, relays
) -> None:
    first, second = relays
    first.reject_next(451, "4.3.0 later")
    second.reject_next(421, "4.7.0 busy")
    running = Service(
        tmp_path,
        DATABASE_URL=fresh_postgres_url,
        BROKER_URL=rabbitmq_url,
        SMTP_URL=f"{first.url},{second.url}",
        RETRY_DELAY="0.05",
        RETRY_MAX_DELAY="0.5",
        MAX_RETRY_ATTEMPTS="3",
    )
    try:
        running.start_api()
        running.start_workers("email")
        nid = running.notify("email", recipient_id="bob@example.com", content="x")

        assert running.await_status(nid, "Delivered")["attempt_count"] == 2
        assert len(first.wait_for(1)) == 1 and second.messages == []
        assert delivered_via(fresh_postgres_url, nid) == [first.url]
    except BaseException:
        print(running.logs())
        raise
    finally:
        running.close()
