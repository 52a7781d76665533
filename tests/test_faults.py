"""Fault injection with real services: killed workers, a broker outage, a database outage.

Each test prints its figures (accepted, delivered, duplicates, lost) at the end of the run. Outages
are made with a TCP relay between the service and the real server, so that other tests sharing
the server are unaffected.
"""

from __future__ import annotations

import signal

import pytest

from harness.faults import accept_batch, delivered_figures
from harness.network import TcpRelay, via
from harness.processes import Service
from harness.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


def post_while_down(service: Service, count: int, *, allowed: tuple[int, ...]) -> tuple[list[str], int]:
    """POST ``count`` notifications during an outage: the ids accepted, and how many got a 503."""
    accepted, refused = [], 0
    for i in range(count):
        status, answer = service.request(
            "POST", "/notifications/push", {"recipient_id": f"d{i}", "content": "x"}
        )
        assert status in allowed, answer  # never a 500, and nothing accepted that is then lost
        if status == 202:
            accepted.append(answer["notification_id"])
        else:
            refused += 1
    return accepted, refused


def test_workers_killed_repeatedly_lose_nothing(
    tmp_path, fresh_postgres_url, rabbitmq_url, push_endpoint, report
):
    service = Service(
        tmp_path,
        DATABASE_URL=fresh_postgres_url,
        BROKER_URL=rabbitmq_url,
        PUSH_WEBHOOK_URL=push_endpoint.url,
        PROCESSING_LEASE="2",
        WORKER_THREADS="8",
    )
    try:
        service.start_api()
        accepted = [nid for batch in range(3) for nid in accept_batch(service, 1000, f"k{batch}-")]
        workers = service.start_workers("push")
        for _kill in range(4):
            # Kill the whole worker tree in the middle of the run, then start it again.
            seen = len(push_endpoint.requests)
            wait_until(lambda seen=seen: len(push_endpoint.requests) >= seen + 150, timeout=60)
            service.stop(workers, signal.SIGKILL)
            workers = service.start_workers("push")
        result = delivered_figures(service, accepted, push_endpoint)
        report(f"workers SIGKILLed 4 times: {result}")
        assert result["lost"] == 0
        assert result["delivered"] == len(accepted)
        assert result["received"] - result["duplicates"] == len(accepted)
    finally:
        service.close()


def test_broker_outage_accepts_durably_and_delivers_after(
    tmp_path, fresh_postgres_url, rabbitmq_url, push_endpoint, report
):
    relay = TcpRelay(5672).open()
    service = Service(
        tmp_path,
        DATABASE_URL=fresh_postgres_url,
        BROKER_URL=via(relay, rabbitmq_url),
        PUSH_WEBHOOK_URL=push_endpoint.url,
    )
    try:
        service.start_api()
        service.start_workers("push")
        accepted = accept_batch(service, 200, "before-")
        wait_until(lambda: len(push_endpoint.requests) >= 50)
        relay.cut()  # the broker goes away in the middle of the run
        assert service.request("GET", "/health")[0] == 503
        during, _ = post_while_down(service, 100, allowed=(202, 503))
        accepted += during
        relay.open()
        accepted += accept_batch(service, 200, "after-")
        result = delivered_figures(service, accepted, push_endpoint)
        report(f"broker outage: accepted while down={len(during)}/100, {result}")
        assert result["lost"] == 0
    finally:
        service.close()
        relay.cut()


def test_database_outage_is_503_and_workers_resume(
    tmp_path, fresh_postgres_url, rabbitmq_url, push_endpoint, report
):
    relay = TcpRelay(5432).open()
    service = Service(
        tmp_path,
        DATABASE_URL=via(relay, fresh_postgres_url),
        BROKER_URL=rabbitmq_url,
        PUSH_WEBHOOK_URL=push_endpoint.url,
        PROCESSING_LEASE="3",
    )
    try:
        service.start_api()
        service.start_workers("push")
        accepted = accept_batch(service, 300, "before-")
        wait_until(lambda: len(push_endpoint.requests) >= 50)
        relay.cut()  # the database goes away in the middle of the run
        _, refused = post_while_down(service, 20, allowed=(503,))
        assert service.request("GET", "/health")[0] == 503
        relay.open()
        wait_until(lambda: service.request("GET", "/health")[0] == 200, timeout=30)
        accepted += accept_batch(service, 200, "after-")
        result = delivered_figures(service, accepted, push_endpoint)
        report(f"database outage: refused with 503 while down={refused}, {result}")
        assert result["lost"] == 0
    finally:
        service.close()
        relay.cut()
