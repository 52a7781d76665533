"""Queue counts and dead letters on a real RabbitMQ; the official dramatiq-dashboard on a real Redis."""

from __future__ import annotations

import os
import uuid

import dramatiq
import pika
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from actors import queues
from harness.servers import unavailable


@pytest.fixture
def rabbit(rabbitmq_url):
    broker = RabbitmqBroker(url=rabbitmq_url, confirm_delivery=True)
    yield broker
    for queue in ("push", "push.DQ", "push.XQ"):
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


@pytest.mark.redis
def test_official_dramatiq_dashboard_is_mounted_on_a_redis_broker(tmp_path):
    import redis
    from dramatiq.brokers.redis import RedisBroker

    from api import create_app
    from api.dashboard import dramatiq_dashboard

    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        unavailable("Redis", exc)
    namespace = f"notif-test-{uuid.uuid4().hex[:8]}"
    broker = RedisBroker(url=url, namespace=namespace)
    try:
        broker.declare_queue("push")
        sent = broker.enqueue(message(1))
        app = create_app(
            {"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path}/api.db", "RUN_WORKERS": False}
        )
        assert dramatiq_dashboard.mount(app, broker)
        client = app.test_client()

        overview = client.get("/dashboard/dramatiq/")
        assert overview.status_code == 200 and "push" in overview.text
        queue = client.get("/dashboard/dramatiq/queues/push/standard").text
        (nid,) = sent.args[0]
        assert f"deliver_push({{&#39;{nid}&#39;: 1}})" in queue
        assert client.get("/dashboard/").status_code == 200  # ours still answers beside it
    finally:
        for key in broker.client.scan_iter(f"{namespace}:*"):
            broker.client.delete(key)
        broker.close()
