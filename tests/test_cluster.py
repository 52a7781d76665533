"""A RabbitMQ cluster with quorum queues: a node stopped halfway through a run loses nothing.

Three RabbitMQ nodes of the module's own, started by rabbitmq_cluster.sh (what ``make cluster`` runs):
their own node names, ports, data and Erlang cookie, so the shared RabbitMQ is never touched. The
API and two worker processes connect through the multi-node BROKER_URL. Each test stops a node with
``rabbitmqctl stop_app`` halfway through 1,000 notifications due over 20 seconds, starts it again,
and prints its figures. Heavy on CPU, so marked ``exclusive``: CI runs them alone.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from harness.cluster import NODES, Cluster
from harness.processes import Service
from harness.receivers import PushReceiver
from harness.servers import required
from harness.waiting import wait_until

pytestmark = [pytest.mark.exclusive, pytest.mark.postgres, pytest.mark.rabbitmq]

COUNT = 1000
SPREAD = 20.0  # seconds over which the COUNT notifications fall due
LEAD = 5.0  # seconds from accepting them to the first due time
# The bound: failing over costs seconds; a message lost with its node would wait for
# DISPATCH_LEASE (600 s) before its scheduler sent it again.
LATENESS_BOUND = 30.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    running = Cluster(tmp_path_factory.mktemp("rabbitmq"))
    try:
        with required():
            running.start()
        yield running
    finally:
        running.stop()  # also the nodes of a start that failed halfway


@pytest.fixture
def vhost(cluster):
    return cluster.add_vhost()


@pytest.fixture
def service(tmp_path, fresh_postgres_url, push_endpoint, cluster, vhost):
    running = Service(
        tmp_path,
        DATABASE_URL=fresh_postgres_url,
        BROKER_URL=cluster.broker_url(vhost),
        RABBITMQ_QUEUE_TYPE="quorum",
        PUSH_WEBHOOK_URL=push_endpoint.url,
    )
    yield running
    running.close()


class Prober:
    """POSTs a notification due now every 50 ms from another thread, recording each answer."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.answers: list[int | str] = []
        self.accepted: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            body = {"recipient_id": f"p{len(self.answers)}", "content": "x"}
            try:
                status, answer = self.service.request("POST", "/notifications/push", body)
            except OSError as exc:  # no answer at all is an answer too, and not a 202
                self.answers.append(repr(exc))
                continue
            self.answers.append(status)
            if status == 202:
                self.accepted.append(answer["notification_id"])


def consumers(cluster: Cluster, vhost: str, via: str) -> int:
    """Consumers of the push queue and its .DQ (each worker process has one of each); -1 while unknown."""
    counts = [cluster.consumers(vhost, queue, via) for queue in ("push", "push.DQ")]
    return -1 if None in counts else sum(c for c in counts if c is not None)


def accept_spread(service: Service) -> list[str]:
    """COUNT notifications due one by one over SPREAD seconds, from LEAD seconds from now."""
    first = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=LEAD)
    items = [
        {
            "channel": "push",
            "recipient_id": f"r{i}",
            "content": "x",
            "scheduled_time": (first + dt.timedelta(seconds=SPREAD * i / COUNT)).isoformat(),
        }
        for i in range(COUNT)
    ]
    status, answer = service.request("POST", "/notifications/batch", {"notifications": items})
    assert status == 202, answer
    return answer["notification_ids"]


def count(service: Service, status: str) -> int:
    return service.request("GET", f"/notifications?status={status}&limit=1")[1]["count"]


def worst_lateness(service: Service) -> float:
    """The longest wait from due time to delivery, in seconds, over every delivered notification."""
    worst, offset = 0.0, 0
    while True:
        page = service.request("GET", f"/notifications?status=Delivered&limit=1000&offset={offset}")[1]
        for n in page["notifications"]:
            due = dt.datetime.fromisoformat(n["estimated_delivery_time"])
            worst = max(worst, (dt.datetime.fromisoformat(n["delivered_at"]) - due).total_seconds())
        offset += len(page["notifications"])
        if not page["notifications"]:
            return worst


def run_with_a_node_stopped(
    service: Service, cluster: Cluster, vhost: str, receiver: PushReceiver, stopped: Callable[[], str]
) -> dict[str, Any]:
    """Accept the spread run, stop the node ``stopped()`` names once half is delivered, start it again.

    Returns the run's figures; asserts what must hold whatever the node.
    """
    with Prober(service) as prober:
        accepted = accept_spread(service)
        wait_until(lambda: len(receiver.requests) >= COUNT // 2, timeout=LEAD + SPREAD + 30)
        node = stopped()
        survivor = next(letter for letter in NODES if letter != node)
        consuming = consumers(cluster, vhost, survivor)
        cluster.ctl(node, "stop_app")
        stopped_at = time.monotonic()
        try:
            # The workers' consumers of the queue and its .DQ are back, on the surviving nodes.
            wait_until(lambda: consumers(cluster, vhost, survivor) < consuming, timeout=30)
            wait_until(lambda: consumers(cluster, vhost, survivor) == consuming, timeout=60)
            failover = time.monotonic() - stopped_at
            assert service.request("GET", "/health")[0] == 200  # a listed node answers
            wait_until(lambda: count(service, "Delivered") >= len(accepted), timeout=LEAD + SPREAD + 60)
        finally:
            cluster.ctl(node, "start_app")
        started_at = time.monotonic()
    accepted += prober.accepted
    wait_until(lambda: count(service, "Delivered") == len(accepted), timeout=60)

    # The node is back in the cluster, and every queue has all its members online again.
    def all_online() -> dict[str, dict[str, Any]] | None:
        queues = cluster.queues(vhost, survivor)
        complete = all(
            len(q["members"]) == 3 and sorted(q["online"]) == sorted(q["members"]) for q in queues.values()
        )
        return queues if complete else None

    queues = wait_until(all_online, timeout=120)
    rejoined = time.monotonic() - started_at
    received = [r.body["notification_id"] for r in receiver.requests if r.body]
    figures = {
        "accepted": len(accepted),
        "delivered": count(service, "Delivered"),
        "lost": len(set(accepted) - set(received)),
        "duplicates": len(received) - len(set(received)),
        "processing": count(service, "Processing"),
        "worst_lateness_s": round(worst_lateness(service), 2),
        "workers_failover_s": round(failover, 2),
        "members_online_again_s": round(rejoined, 2),
        "api_answers": {status: prober.answers.count(status) for status in set(prober.answers)},
    }
    assert set(prober.answers) == {202}, figures  # the API went on accepting throughout
    assert figures["lost"] == 0 and figures["delivered"] == len(accepted), figures
    assert figures["processing"] == 0, figures
    assert figures["worst_lateness_s"] < LATENESS_BOUND, figures
    # A duplicate comes with its notification's Idempotency-Key, by which the receiver drops it.
    assert receiver.unique_ids() == len(accepted), figures
    assert {q["type"] for q in queues.values()} == {"quorum"}
    assert {"push", "push.DQ", "push.XQ"} <= set(queues)
    return figures


def test_the_push_queue_leader_stopped_halfway_loses_nothing(service, cluster, vhost, push_endpoint, report):
    service.start_api()
    service.start_workers("push")
    service.start_workers("push")
    wait_until(lambda: "push" in cluster.queues(vhost, "b"), timeout=30)

    def leader() -> str:
        return cluster.letter(cluster.queues(vhost, "b")["push"]["leader"])

    figures = run_with_a_node_stopped(service, cluster, vhost, push_endpoint, leader)
    report(f"push queue's leader stopped: {figures}")


def test_the_node_a_worker_is_connected_to_stopped_halfway_loses_nothing(
    service, cluster, vhost, push_endpoint, report
):
    service.start_api()
    service.start_workers("push")
    wait_until(lambda: "push" in cluster.queues(vhost, "b"), timeout=30)
    leader = cluster.letter(cluster.queues(vhost, "b")["push"]["leader"])
    # The second worker connects first to a node that leads no queue: stopping it moves only that worker.
    elsewhere = next(letter for letter in NODES if letter != leader)
    service.env["BROKER_URL"] = cluster.broker_url(vhost, elsewhere, *(n for n in NODES if n != elsewhere))
    service.start_workers("push")
    wait_until(lambda: consumers(cluster, vhost, leader) == 4, timeout=30)

    figures = run_with_a_node_stopped(service, cluster, vhost, push_endpoint, lambda: elsewhere)
    report(f"a worker's node stopped (not a leader): {figures}")
