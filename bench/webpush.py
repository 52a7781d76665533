"""End-to-end delivery to browsers: N due-now notifications, each to a Web Push device of its own on the
local push service (VAPID verified, every payload decrypted), in alternating rounds with the no-op Dramatiq
ceiling (`-p 1 -t 8`) draining N messages on the same broker."""

from __future__ import annotations

import contextlib
import datetime as dt
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg2

from bench.common import Backing, BenchError, log, post_batches, running, write_result
from bench.e2e import ceiling, delivery_stats
from bench.rounds import ROUNDS, interleave, print_ratios, summarise
from harness.bulk_webpush import BulkWebPushService
from harness.payloads import batch_body
from harness.processes import ALL_DAY
from storage.devices import digest

NAME = "webpush"
BATCH = 1000
# Delivered before the measured ones, so that what a worker does once (its imports, the sender and its
# connections) is not counted: a service that has been running has done it long before.
WARM_UP = 300

# Every device is a subscription on the local push service, in this process, on 127.0.0.1.
_REGISTER = """
INSERT INTO device (id, recipient_id, kind, address, address_digest, p256dh, auth, active, created_at,
                    last_seen_at)
SELECT unnest(%s::uuid[]), unnest(%s::text[]), 'webpush', unnest(%s::text[]), unnest(%s::text[]),
       unnest(%s::text[]), unnest(%s::text[]), true, %s, %s
"""


def _register(made: Backing, push: BulkWebPushService, n: int, prefix: str) -> list[str]:
    """One subscription and device per recipient, written straight to the table: not what is measured."""
    subscriptions = [push.subscribe() for _ in range(n)]
    recipients = [f"{prefix}{i}" for i in range(n)]
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
    with BulkWebPushService() as push, running(NAME, settings) as (service, made, _):
        warm, recipients = _register(made, push, WARM_UP, "warm-up"), _register(made, push, n, "browser")
        if post_batches(service.base_url, _bodies(warm), concurrency=2).errors:
            raise BenchError("the warm-up's batch POSTs failed")
        push.wait_accepted(WARM_UP, timeout=timeout)
        if len(push.decrypt_received()) != WARM_UP:
            raise BenchError(f"the warm-up's messages did not all decrypt: {push.refusals[:3]}")
        push.received.clear()
        log(f"{n:,} Web Push devices registered; accepting {n:,} due-now notifications, one to each")
        # This process is the push service (and the batch client): the machine's CPU it takes.
        cpu_before = time.process_time()
        accepted = post_batches(service.base_url, _bodies(recipients), concurrency=2)
        if accepted.errors:
            raise BenchError(f"batch POSTs failed: {accepted.error_samples}")
        log(f"accepted in {accepted.elapsed:.1f}s; awaiting deliveries")
        with contextlib.suppress(TimeoutError):
            push.wait_accepted(n, timeout=timeout)
        push_service_cpu = time.process_time() - cpu_before
        last = push.last_accepted_at
        db = delivery_stats(made)
    # After the window, as the browsers would: only what decrypts counts.
    received = push.decrypt_received()
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
        "refused_by_the_push_service": len(push.refusals),
        "push_service_cpu_ms_per_delivery": round(push_service_cpu * 1000 / max(unique, 1), 3),
        "refusal_samples": push.refusals[:3],
        "complete": unique >= n,
        **db,
    }


def run(quick: bool, scale: float = 1.0) -> dict:
    """The pipeline and the no-op drain of the same count, in turn."""
    n = 500 if quick else max(500, round(10000 * scale))
    timeout = 60 if quick else 300
    notes = []
    ours, theirs = interleave(
        lambda: pipeline(n, timeout), lambda: ceiling(n, 1, 8, timeout), ROUNDS, "webpush_delivery"
    )
    for r in ours:
        if not r["complete"]:
            notes.append(
                f"a round reached only {r['received_unique']:,} of {n:,} devices within {timeout}s; "
                "its rate is over those"
            )
        if r["refused_by_the_push_service"]:
            refused = r["refused_by_the_push_service"]
            notes.append(f"the push service refused {refused}: {r['refusal_samples']}")
    results = {
        "webpush_delivery": {
            **summarise([r["deliveries_per_s"] for r in ours], [c["messages_per_s"] for c in theirs]),
            "unit": "deliveries/s",
            "service_runs": ours,
            "ceiling_runs": theirs,
            "duplicates": sum(r["duplicates"] for r in ours),
            "push_service_cpu_ms_per_delivery": [r["push_service_cpu_ms_per_delivery"] for r in ours],
        }
    }
    print_ratios(f"End-to-end delivery of {n:,} due-now push notifications to Web Push devices", results)
    params = {
        "n": n,
        "rounds": ROUNDS,
        "timeout_s": timeout,
        "devices": "one webpush device per recipient, each a subscription on harness.bulk_webpush."
        "BulkWebPushService in the bench process (it verifies VAPID on every message and decrypts "
        "every message after the round)",
        "ingest": "POST /notifications/batch, 1000 per request, 2 client threads",
        "service": "gunicorn.conf.py defaults; run_workers.sh push (a process per core x 8 threads)",
        "rate": "unique devices reached / (the n-th accepted push - first batch request sent)",
        "ceiling": "bench/noop_actor.py under dramatiq -p 1 -t 8 draining n pre-queued messages",
    }
    write_result(NAME, quick, params, results, notes)
    return results
