"""End-to-end delivery to browsers: N due-now notifications, each to a Web Push device of its own on the
local push service (VAPID verified, payload decrypted), against the no-op Dramatiq ceiling of the same run."""

from __future__ import annotations

import contextlib
import datetime as dt
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg2

from bench.common import Backing, BenchError, log, post_batches, print_table, running, write_result
from bench.e2e import ceiling, delivery_stats
from harness.payloads import batch_body
from harness.processes import ALL_DAY
from harness.push_services import WebPushService
from storage.devices import digest

NAME = "webpush"
TARGET = "deliveries to Web Push devices reach at least half of the no-op ceiling"
BATCH = 1000

# Every device is a subscription on the local push service, in this process, on 127.0.0.1.
_REGISTER = """
INSERT INTO device (id, recipient_id, kind, address, address_digest, p256dh, auth, active, created_at,
                    last_seen_at)
SELECT unnest(%s::uuid[]), unnest(%s::text[]), 'webpush', unnest(%s::text[]), unnest(%s::text[]),
       unnest(%s::text[]), unnest(%s::text[]), true, %s, %s
"""


def _register(made: Backing, push: WebPushService, n: int) -> list[str]:
    """One subscription and device per recipient, written straight to the table: not what is measured."""
    subscriptions = [push.subscribe() for _ in range(n)]
    recipients = [f"browser-user{i}" for i in range(n)]
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows = (
        [str(uuid.uuid4()) for _ in range(n)],
        recipients,
        [s.endpoint for s in subscriptions],
        [digest(s.endpoint) for s in subscriptions],
        [s.p256dh for s in subscriptions],
        [s.auth for s in subscriptions],
        now,
        now,
    )
    # A connection of its own, which commits (Backing.sql is for reading).
    with contextlib.closing(psycopg2.connect(made.database_url)) as conn, conn, conn.cursor() as cursor:
        cursor.execute(_REGISTER, rows)
    return recipients


def _bodies(recipients: list[str]):
    for start in range(0, len(recipients), BATCH):
        items = [
            {"channel": "push", "recipient_id": r, "content": "Your order has shipped!", "title": "Order"}
            for r in recipients[start : start + BATCH]
        ]
        yield batch_body(items)


def pipeline(n: int, timeout: float) -> dict[str, Any]:
    key = Path(tempfile.mkdtemp(prefix="bench-vapid-")) / "vapid_private.pem"
    settings = {**ALL_DAY, "PUSH_ENDPOINT_ALLOWLIST": "127.0.0.1", "VAPID_PRIVATE_KEY_FILE": str(key)}
    with WebPushService() as push, running(NAME, settings) as (service, made, _):
        recipients = _register(made, push, n)
        log(f"{n:,} Web Push devices registered; accepting {n:,} due-now notifications, one to each")
        # This process is the push service (and the batch client): the machine's CPU it takes.
        cpu_before = time.process_time()
        accepted = post_batches(service.base_url, _bodies(recipients), concurrency=2)
        if accepted.errors:
            raise BenchError(f"batch POSTs failed: {accepted.error_samples}")
        log(f"accepted in {accepted.elapsed:.1f}s; awaiting deliveries")
        with contextlib.suppress(TimeoutError):
            push.wait_for(n, timeout=timeout)
        last = time.time()
        push_service_cpu = time.process_time() - cpu_before
        with push.condition:
            received = list(push.received)
            refusals = list(push.refusals)
        db = delivery_stats(made)
    unique = len({r.subscription_id for r in received})
    span = max(last - accepted.first_sent, 1e-9)
    return {
        "n": n,
        "accept_seconds": round(accepted.elapsed, 2),
        "first_accept_to_last_delivery_s": round(span, 2),
        "deliveries_per_s": round(unique / span, 1),
        "received": len(received),
        "received_unique": unique,
        "duplicates": len(received) - unique,
        "refused_by_the_push_service": len(refusals),
        "push_service_cpu_ms_per_delivery": round(push_service_cpu * 1000 / max(unique, 1), 3),
        "refusal_samples": refusals[:3],
        "complete": unique >= n,
        **db,
    }


def run(quick: bool, scale: float = 1.0) -> dict:
    n = 500 if quick else max(500, round(10000 * scale))
    timeout = 60 if quick else 300
    notes = []
    result = pipeline(n, timeout)
    noop = ceiling(n, 1, 8, timeout)
    if not result["complete"]:
        notes.append(f"only {result['received_unique']:,} of {n:,} delivered within {timeout}s")
    base = noop["messages_per_s"]
    print_table(
        f"End-to-end delivery of {n:,} due-now push notifications to Web Push devices (target: {TARGET})",
        ["what", "per s", "of ceiling", "span s", "accept s", "p50 accept->deliv s", "p99 s", "dups"],
        [
            [
                "pipeline, a Web Push device each",
                result["deliveries_per_s"],
                f"{result['deliveries_per_s'] / base:.0%}",
                result["first_accept_to_last_delivery_s"],
                result["accept_seconds"],
                result["accept_to_delivery_p50_s"],
                result["accept_to_delivery_p99_s"],
                result["duplicates"],
            ],
            ["no-op actor -p 1 -t 8", base, "100%", noop["drain_seconds"], None, None, None, None],
        ],
    )
    results = {
        "pipeline": result,
        "noop_ceiling": noop,
        "target": TARGET,
        "target_met": result["deliveries_per_s"] >= base / 2,
    }
    params = {
        "n": n,
        "timeout_s": timeout,
        "devices": "one webpush device per recipient, each a subscription on harness.push_services."
        "WebPushService in the bench process (it verifies VAPID and decrypts every message)",
        "ingest": "POST /notifications/batch, 1000 per request, 2 client threads",
        "service": "gunicorn.conf.py defaults; run_workers.sh push (a process per core x 8 threads)",
        "rate": "unique devices reached / (the n-th accepted push - first batch request sent)",
    }
    write_result(NAME, quick, params, results, notes)
    return results
