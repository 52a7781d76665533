"""Metrics: the JSON counts by host, channel and status, and the API's Prometheus endpoint."""

from __future__ import annotations

import datetime as dt
import urllib.request

import pytest

from harness.factories import make, settle
from harness.processes import Service
from harness.prometheus import sample, scrape
from storage import metrics, models
from storage.clock import utcnow


def test_activity_counts_by_worker_host_else_api_host_channel_and_status(db):
    make()
    make("email")
    settle(make(), status=models.DELIVERED, worker_host="worker-1")
    settle(make(), status=models.FAILED, worker_host="worker-1")
    settle(make("email"), status=models.PROCESSING, worker_host="worker-2")
    settle(
        make(), status=models.DELIVERED, worker_host="worker-1", updated_at=utcnow() - dt.timedelta(hours=2)
    )

    counts = metrics.activity(utcnow() - dt.timedelta(hours=1))

    assert counts["total"] == 5
    assert set(counts["servers"]) == {"api-1", "worker-1", "worker-2"}
    worker_push = counts["servers"]["worker-1"]["channels"]["push"]
    assert worker_push == {
        "total": 2,
        "statuses": {"scheduled": 0, "processing": 0, "delivered": 1, "failed": 1, "cancelled": 0},
    }
    assert counts["servers"]["api-1"]["total"] == 2
    assert counts["servers"]["api-1"]["channels"]["email"]["statuses"]["scheduled"] == 1
    assert counts["servers"]["worker-2"]["channels"]["email"]["statuses"]["processing"] == 1


def test_schedule_outlook_and_timeline_are_grouped_by_the_database(db):
    now = utcnow()
    for hours in (-1, 0.5, 5, 48):
        settle(make(), due_at=now + dt.timedelta(hours=hours))
    settle(make("email"), status=models.CANCELLED)

    assert metrics.schedule_outlook(now)["push"] == {"now": 1, "hour": 1, "day": 1, "later": 1}
    assert metrics.counts_by_status([models.PENDING, models.CANCELLED]) == {
        ("push", models.PENDING): 4,
        ("email", models.CANCELLED): 1,
    }
    hour = now.replace(minute=0, second=0, microsecond=0)
    assert (hour, "push", models.PENDING, 4) in metrics.timeline(hour)


def test_metrics_endpoint_has_the_documented_shape(client):
    client.post("/notifications/push", json={"recipient_id": "u1", "content": "hi"})
    body = client.get("/metrics").json
    assert body["period"] == 3600
    dt.datetime.fromisoformat(body["timestamp"])
    assert body["total"] == 1
    (host,) = body["servers"]
    push = body["servers"][host]["channels"]["push"]
    assert push["total"] == 1
    assert push["statuses"] == {"scheduled": 1, "processing": 0, "delivered": 0, "failed": 0, "cancelled": 0}
    assert body["servers"][host]["total"] == 1


@pytest.mark.parametrize("period", ["0", "-5", "soon", str(10**9)])
def test_metrics_period_must_be_a_sensible_number_of_seconds(client, period):
    response = client.get(f"/metrics?period={period}")
    assert response.status_code == 422
    assert "period" in response.json["errors"]["query"]


def test_prometheus_groups_requests_by_url_rule_and_counts_notifications(client):
    # The counter belongs to the process, which other tests' apps share.
    before = sample(client.get("/metrics/prometheus").text, "notifications_accepted_total", channel="email")
    for _ in range(2):
        nid = client.post("/notifications/email", json={"recipient_id": "a@b.example", "content": "x"}).json[
            "notification_id"
        ]
        client.get(f"/notifications/{nid}")
    text = client.get("/metrics/prometheus").text

    rule = "/notifications/<uuid:notification_id>"
    assert sample(text, "flask_http_request_duration_seconds_count", url_rule=rule, status="200") == 2
    assert nid not in text  # one series per route, not per id
    assert sample(text, "notifications_accepted_total", channel="email") == before + 2
    assert sample(text, "notifications", channel="email", status="scheduled") == 2
    assert sample(text, "notifications", channel="push", status="failed") == 0


def test_gunicorn_workers_report_the_sum_of_their_requests(tmp_path):
    service = Service(
        tmp_path,
        as_deployed=True,
        WEB_CONCURRENCY="3",
        BROKER_URL="redis://127.0.0.1:1/0",  # never contacted; makes gunicorn.conf start 3 workers
        DATABASE_URL=f"sqlite:///{tmp_path}/api.db",
    )
    try:
        base = service.start_api()
        metrics_url = f"{base}/metrics/prometheus"
        # None until a GET has been answered 200 (start_api awaited /health, a 503 here).
        before = sample(scrape(metrics_url), "flask_http_request_total", method="GET", status="200") or 0
        for _ in range(30):
            urllib.request.urlopen(f"{base}/openapi.json").close()
        # Whichever worker answers a scrape, it reports every worker's requests.
        for _ in range(4):
            assert (
                sample(scrape(metrics_url), "flask_http_request_total", method="GET", status="200")
                == before + 30
            )
    finally:
        service.close()
