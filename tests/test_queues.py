"""Queues on a real RabbitMQ: counts, types, dead letters; the official dramatiq-dashboard on a real Redis."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import uuid
from urllib.parse import urlsplit

import dramatiq
import pika
import pika.exceptions
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker

import actors.rabbitmq
from actors import queues
from harness.network import free_port
from harness.processes import ROOT
from harness.servers import unavailable
from harness.waiting import wait_until


@pytest.fixture
def rabbit(rabbitmq_url):
    broker = RabbitmqBroker(url=rabbitmq_url, confirm_delivery=True)
    yield broker
    # Every queue a test may have declared, of either type: the vhost is the session's.
    for queue in ("push", "push.DQ", "push.XQ", "email", "email.DQ", "email.XQ"):
        broker.channel.queue_delete(queue)
    broker.close()


def message(n: int) -> dramatiq.Message:
    return dramatiq.Message(
        queue_name="push", actor_name="deliver_push", args=({str(uuid.uuid4()): n},), kwargs={}, options={}
    )


def dead_letter(broker, n: int, error: str) -> dramatiq.Message:
    failed = message(n).copy(
        options={"retries": 5, "traceback": f"Traceback...\nTransientDeliveryError: {error}"}
    )
    broker.channel.basic_publish("", "push.XQ", failed.encode(), pika.BasicProperties(delivery_mode=2))
    return failed


@pytest.mark.rabbitmq
def test_counts_ready_delayed_and_dead_letters_without_the_management_plugin(rabbit):
    rabbit.declare_queue("push", ensure=True)
    rabbit.enqueue(message(1))
    rabbit.enqueue(message(2), delay=60_000)
    dead_letter(rabbit, 3, "timeout")

    (push, email) = queues.stats(rabbit, ["push", "email"])

    assert (push.ready, push.delayed, push.dead, push.consumers) == (1, 1, 1, 0)
    assert (email.ready, email.dead) == (0, 0)  # never declared: zero, not an error


@pytest.mark.rabbitmq
def test_dead_letters_are_listed_requeued_one_by_one_and_dropped(rabbit):
    rabbit.declare_queue("push", ensure=True)
    first, second, third = (dead_letter(rabbit, n, f"error {n}") for n in range(3))

    listed = queues.dead_letters(rabbit, "push")
    assert [d.message_id for d in listed] == [first.message_id, second.message_id, third.message_id]
    assert listed[0].error == "TransientDeliveryError: error 0" and listed[0].retries == 5
    assert queues.stats(rabbit, ["push"])[0].dead == 3  # listing took nothing

    assert queues.requeue_dead(rabbit, "push", second.message_id) == 1
    (push,) = queues.stats(rabbit, ["push"])
    assert (push.ready, push.dead) == (1, 2)
    _method, _props, body = rabbit.channel.basic_get("push", auto_ack=True)
    requeued = dramatiq.Message.decode(body)
    assert requeued.message_id == second.message_id and "retries" not in requeued.options

    assert queues.drop_dead(rabbit, "push") == 2
    assert queues.stats(rabbit, ["push"])[0].dead == 0


@pytest.fixture
def redis_broker():
    """A RedisBroker on a namespace of its own, its keys deleted afterwards."""
    import redis
    from dramatiq.brokers.redis import RedisBroker

    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        unavailable("Redis", exc)
    namespace = f"notif-test-{uuid.uuid4().hex[:8]}"
    broker = RedisBroker(url=url, namespace=namespace)
    broker.declare_queue("push")
    yield broker
    for key in broker.client.scan_iter(f"{namespace}:*"):
        broker.client.delete(key)
    broker.close()


def dramatiq_dashboard_client(tmp_path, broker, **config):
    from api import create_app
    from api.dashboard import dramatiq_dashboard

    app = create_app(
        {"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path}/api.db", "RUN_WORKERS": False, **config}
    )
    assert dramatiq_dashboard.mount(app, broker)
    return app.test_client()


def queued(broker) -> set[str]:
    """The Redis ids of the messages in the broker's push queue (the dashboard's ids)."""
    return {key.decode() for key in broker.client.hkeys(f"{broker.namespace}:push.msgs")}


def redis_id(sent: dramatiq.Message) -> str:
    return sent.options["redis_message_id"]


@pytest.mark.redis
def test_official_dramatiq_dashboard_is_mounted_on_a_redis_broker(tmp_path, redis_broker):
    sent = redis_broker.enqueue(message(1))
    client = dramatiq_dashboard_client(tmp_path, redis_broker)

    overview = client.get("/dashboard/dramatiq/")
    assert overview.status_code == 200 and "push" in overview.text
    queue = client.get("/dashboard/dramatiq/queues/push/standard").text
    (nid,) = sent.args[0]
    assert f"deliver_push({{&#39;{nid}&#39;: 1}})" in queue
    assert client.get("/dashboard/").status_code == 200  # ours still answers beside it


KEY = "dashboard-key-0123456789"
PASSWORD = "dashboard-password"
CREDENTIALS = {
    "api-key": {"X-API-Key": KEY},
    "bearer": {"Authorization": f"Bearer {KEY}"},
    "password": {"Authorization": "Basic " + base64.b64encode(f"anyone:{PASSWORD}".encode()).decode()},
}
WRONG_CREDENTIALS = {
    "none": {},
    "wrong-key": {"X-API-Key": "not-the-key"},
    "wrong-password": {"Authorization": "Basic " + base64.b64encode(b"anyone:guess").decode()},
}
# The dramatiq-dashboard's own anti-forgery token, a cookie its forms repeat.
DD_CSRF = "__dd_csrf"
DD = "/dashboard/dramatiq"


def dd_routes(message_id: str) -> list[tuple[str, str, int]]:
    """Every route of the dramatiq-dashboard: method, path, and its status for a caller let in."""
    return [
        ("GET", DD, 308),  # to DD + "/"
        ("GET", f"{DD}/", 200),
        ("GET", f"{DD}/queues/push", 200),
        ("GET", f"{DD}/queues/push/standard", 200),
        ("GET", f"{DD}/queues/push/delayed", 200),
        ("GET", f"{DD}/queues/push/failed", 200),
        ("GET", f"{DD}/queues/push/standard/{message_id}", 200),
        ("GET", f"{DD}/delete-message", 405),
        ("GET", f"{DD}/requeue-message", 405),
        ("GET", f"{DD}/no-such-page", 404),
        ("POST", f"{DD}/delete-message", 302),
        ("POST", f"{DD}/requeue-message", 302),
    ]


def dd_token(page: str) -> str:
    return re.search(rf'name="{DD_CSRF}" value="([0-9a-f]{{64}})"', page)[1]


@pytest.fixture
def secured(tmp_path, redis_broker):
    return dramatiq_dashboard_client(tmp_path, redis_broker, API_KEYS=(KEY,), DASHBOARD_PASSWORD=PASSWORD)


@pytest.mark.redis
@pytest.mark.parametrize("wrong", WRONG_CREDENTIALS.values(), ids=WRONG_CREDENTIALS.keys())
def test_every_dramatiq_dashboard_route_is_refused_without_a_key_or_the_password(
    secured, redis_broker, wrong
):
    sent = redis_broker.enqueue(message(1))
    # What a stranger posts: the action's fields, with a token of their own in cookie and form alike.
    secured.set_cookie(DD_CSRF, "a" * 64, path="/")
    form = {"queue": "push", "id": redis_id(sent), DD_CSRF: "a" * 64}

    for method, path, _status in dd_routes(redis_id(sent)):
        response = secured.open(path, method=method, headers=wrong, data=form if method == "POST" else None)

        assert response.status_code == 401, (method, path)
        assert response.headers["WWW-Authenticate"] == 'Basic realm="dashboard", Bearer'
        assert "push" not in response.text
    assert queued(redis_broker) == {redis_id(sent)}  # neither deleted nor requeued


@pytest.mark.redis
@pytest.mark.parametrize("credentials", CREDENTIALS.values(), ids=CREDENTIALS.keys())
def test_every_dramatiq_dashboard_route_answers_a_key_or_the_password(secured, redis_broker, credentials):
    deleted, requeued = redis_broker.enqueue(message(1)), redis_broker.enqueue(message(2))

    for method, path, status in dd_routes(redis_id(deleted)):
        data = None
        if method == "POST":
            page = secured.get(f"{DD}/queues/push/standard", headers=credentials).text
            target = deleted if path.endswith("delete-message") else requeued
            data = {"queue": "push", "id": redis_id(target), DD_CSRF: dd_token(page)}
        response = secured.open(path, method=method, headers=credentials, data=data)

        assert response.status_code == status, (method, path)
    (again,) = queued(redis_broker)  # one deleted; the other requeued as a new message
    assert again not in (redis_id(deleted), redis_id(requeued))


@pytest.mark.redis
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_dramatiq_dashboard_token_is_a_strict_same_site_cookie(secured, redis_broker, scheme):
    """Like /dashboard's: a cross-site form does not send it, so its POST is refused."""
    sent = redis_broker.enqueue(message(1))
    page = secured.get(
        f"{DD}/queues/push/standard", headers=CREDENTIALS["password"], base_url=f"{scheme}://h"
    )

    cookie = page.headers["Set-Cookie"]
    assert cookie.startswith(f"{DD_CSRF}={dd_token(page.text)};")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", f"path={DD}"} <= attributes
    assert ("secure" in attributes) == (scheme == "https")

    # A cross-site form: the browser sends the password with it, but not the strict cookie.
    forged = secured.application.test_client().post(
        f"{DD}/delete-message",
        headers=CREDENTIALS["password"],
        data={"queue": "push", "id": redis_id(sent), DD_CSRF: dd_token(page.text)},
        base_url=f"{scheme}://h",
    )
    assert forged.status_code == 403
    assert queued(redis_broker) == {redis_id(sent)}


def quorum_broker(url: str) -> actors.rabbitmq.RabbitmqBroker:
    return actors.rabbitmq.RabbitmqBroker([url], queue_type="quorum", confirm_delivery=True)


def declared(rabbitmq_url: str) -> dict[str, dict]:
    """The vhost's queues as RabbitMQ lists them: type and arguments (as a dict)."""
    vhost = urlsplit(rabbitmq_url).path.lstrip("/")
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "--formatter", "json", "name", "type", "arguments"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    queues = {q["name"]: q for q in json.loads(listed)}
    for queue in queues.values():
        queue["arguments"] = {name: value for name, _type, value in queue["arguments"]}
    return queues


def test_classic_queues_are_declared_as_dramatiq_declares_them():
    ours = actors.rabbitmq.RabbitmqBroker(["amqp://127.0.0.1:1/%2F"])
    theirs = RabbitmqBroker(url="amqp://127.0.0.1:1/%2F")
    assert ours.queue_arguments("push") == theirs._build_queue_arguments("push")
    assert ours.dead_letter_arguments() == {"x-message-ttl": dramatiq.brokers.rabbitmq.DEAD_MESSAGE_TTL}


@pytest.mark.rabbitmq
def test_quorum_declares_the_queue_its_delay_and_dead_letter_queues_quorum_and_dead_letters(
    rabbit, rabbitmq_url
):
    broker = quorum_broker(rabbitmq_url)
    try:
        broker.declare_queue("push", ensure=True)
        listed = declared(rabbitmq_url)
        assert {listed[q]["type"] for q in ("push", "push.DQ", "push.XQ")} == {"quorum"}
        assert listed["push"]["arguments"]["x-dead-letter-routing-key"] == "push.XQ"
        assert listed["push.DQ"]["arguments"]["x-dead-letter-routing-key"] == "push.XQ"
        for queue in ("push", "push.DQ", "push.XQ"):
            assert listed[queue]["arguments"]["x-delivery-limit"] == actors.rabbitmq.DELIVERY_LIMIT

        broker.enqueue(message(1))
        method, _properties, _body = broker.channel.basic_get("push", auto_ack=False)
        broker.channel.basic_nack(method.delivery_tag, requeue=False)  # what Dramatiq does to a failure
        # A quorum queue dead-letters asynchronously: the message reaches push.XQ a moment later.
        (push,) = wait_until(
            lambda: [s for s in queues.stats(broker, ["push"]) if s.dead == 1], what="the dead letter"
        )
        assert (push.ready, push.dead, push.type) == (0, 1, "quorum")
    finally:
        broker.close()


@pytest.mark.rabbitmq
def test_a_classic_queue_declared_as_quorum_is_refused_naming_the_queue(rabbit, rabbitmq_url):
    rabbit.declare_queue("push", ensure=True)  # classic, as before the setting
    broker = quorum_broker(rabbitmq_url)
    try:
        with pytest.raises(actors.rabbitmq.QueueMismatch, match="queue 'push' as RABBITMQ_QUEUE_TYPE=quorum"):
            broker.declare_queue("push", ensure=True)
        assert queues.stats(broker, ["push"])[0].type == "not quorum"
        with pytest.raises(actors.rabbitmq.QueueMismatch):  # still, for a publisher
            broker.enqueue(message(1))
    finally:
        broker.close()


@pytest.mark.rabbitmq
def test_worker_start_up_stops_on_a_queue_of_another_type_naming_it(rabbit, rabbitmq_url, tmp_path):
    rabbit.declare_queue("push", ensure=True)
    env = {
        **os.environ,
        "BROKER_URL": rabbitmq_url,
        "RABBITMQ_QUEUE_TYPE": "quorum",
        "DATABASE_URL": f"sqlite:///{tmp_path}/worker.db",
    }
    result = subprocess.run(
        [sys.executable, "-c", "import actors.worker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "queue 'push' as RABBITMQ_QUEUE_TYPE=quorum" in result.stderr
    assert "Changing the queue type" in result.stderr


@pytest.mark.rabbitmq
def test_the_first_listed_node_that_answers_is_used(rabbit, rabbitmq_url):
    down = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    broker = actors.rabbitmq.RabbitmqBroker([down, rabbitmq_url], confirm_delivery=True)
    try:
        broker.ping()
        broker.enqueue(message(1))
        assert queues.stats(broker, ["push"])[0].ready == 1
    finally:
        broker.close()
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        actors.rabbitmq.RabbitmqBroker([down, down]).ping()
