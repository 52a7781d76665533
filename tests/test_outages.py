"""Real outages: RabbitMQ and PostgreSQL themselves stopped and started during a run.

These stop servers that every other test uses, so they are marked ``exclusive`` and ``make test``
runs them on their own, after the parallel suite. (tests/test_faults.py makes the same outages for
the service alone, through a TCP relay, and runs in parallel.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.faults import accept_batch, delivered_figures
from harness.processes import Service
from harness.servers import unavailable
from harness.waiting import wait_until

pytestmark = [pytest.mark.exclusive, pytest.mark.postgres, pytest.mark.rabbitmq]


def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=120)


def postgres_cluster(action: str) -> None:
    (version,) = [p.name for p in Path("/etc/postgresql").iterdir()]
    run("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action)


def postgres_ready() -> bool:
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"]).returncode == 0


@pytest.fixture
def service(tmp_path, fresh_postgres_url, rabbitmq_url, push_endpoint):
    tools = ("rabbitmqctl", "pg_ctlcluster", "pg_isready")
    if os.geteuid() != 0 or not all(map(shutil.which, tools)) or not Path("/etc/postgresql").is_dir():
        unavailable("stopping the local servers", "needs root, rabbitmqctl and pg_ctlcluster")
    running = Service(
        tmp_path,
        DATABASE_URL=fresh_postgres_url,
        BROKER_URL=rabbitmq_url,
        PUSH_WEBHOOK_URL=push_endpoint.url,
        PROCESSING_LEASE="5",
    )
    yield running
    running.close()


def test_rabbitmq_restart_loses_nothing(service, push_endpoint, report):
    service.start_api()
    service.start_workers("push")
    accepted = accept_batch(service, 300, "before-")
    wait_until(lambda: len(push_endpoint.requests) >= 30)
    run("rabbitmqctl", "stop_app")
    try:
        assert service.request("GET", "/health")[0] == 503
        during = []
        for i in range(50):
            status, answer = service.request(
                "POST", "/notifications/push", {"recipient_id": f"d{i}", "content": "x"}
            )
            assert status in (202, 503), answer  # the database makes it durable; never a 500
            if status == 202:
                during.append(answer["notification_id"])
        accepted += during
    finally:
        run("rabbitmqctl", "start_app")
    accepted += accept_batch(service, 200, "after-")
    result = delivered_figures(service, accepted, push_endpoint)
    report(f"RabbitMQ restarted: accepted while down={len(during)}/50, {result}")
    assert result["lost"] == 0


def test_postgresql_stop_is_503_and_nothing_is_lost(service, push_endpoint, report):
    service.start_api()
    service.start_workers("push")
    accepted = accept_batch(service, 300, "before-")
    wait_until(lambda: len(push_endpoint.requests) >= 30)
    postgres_cluster("stop")
    try:
        refused = 0
        for i in range(20):
            status, answer = service.request(
                "POST", "/notifications/push", {"recipient_id": f"d{i}", "content": "x"}
            )
            assert status == 503, answer
            refused += 1
        assert service.request("GET", "/health")[0] == 503
    finally:
        postgres_cluster("start")
    wait_until(postgres_ready, timeout=60)
    wait_until(lambda: service.request("GET", "/health")[0] == 200, timeout=60)
    accepted += accept_batch(service, 200, "after-")
    result = delivered_figures(service, accepted, push_endpoint)
    report(f"PostgreSQL stopped and started: refused with 503 while down={refused}, {result}")
    assert result["lost"] == 0
