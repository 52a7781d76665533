"""Bulk ingest: POST /notifications/batch with 1,000 notifications a request from 2 client threads, in
alternating rounds with the database's ceiling: 1,000-row INSERTs of rows PostgreSQL makes itself, straight
into the same table with its indexes, from 2 connections (no HTTP, JSON, validation or Python).
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time

from bench.common import percentile, post_batches, running, write_result
from bench.rounds import ROUNDS, interleave, print_ratios, summarise
from harness.payloads import batch_body, next_week, push_item

NAME = "bulk"
THREADS = 2
BATCH = 1000


def run(quick: bool, scale: float = 1.0) -> dict:
    """Batches from 2 client threads and the table's own INSERTs from 2 connections, in turn."""
    seconds = 2 if quick else max(3, round(8 * scale))
    week = next_week()
    # A few distinct bodies (times spread over the week), encoded once so the client costs little CPU.
    bodies = [
        batch_body([push_item(i, week + dt.timedelta(seconds=(b * BATCH + i) * 7)) for i in range(BATCH)])
        for b in range(8)
    ]
    notes = []
    with running(NAME, {}) as (service, made, _):
        post_batches(service.base_url, iter(bodies[:2]), concurrency=2)  # warm-up

        def batches() -> dict:
            deadline = time.monotonic() + seconds
            result = post_batches(
                service.base_url, itertools.cycle(bodies), concurrency=THREADS, deadline=deadline
            )
            return {
                "concurrency": THREADS,
                "seconds": round(result.elapsed, 2),
                "requests": result.requests,
                "accepted": result.accepted,
                "notifications_per_s": round(result.accepted / result.elapsed, 1),
                "p50_ms": round((percentile(result.latencies, 50) or 0) * 1000, 1),
                "p99_ms": round((percentile(result.latencies, 99) or 0) * 1000, 1),
                "errors": result.errors,
                "error_samples": result.error_samples,
            }

        ours, theirs = interleave(
            batches, lambda: table_ceiling(made, seconds, connections=THREADS), ROUNDS, "batch_1000"
        )
        stored = made.sql("SELECT count(*) FROM notification")[0][0]
    errors = sum(r["errors"] for r in ours)
    if errors:
        notes.append(f"{errors} batch requests failed: {ours[0]['error_samples']}")
    results = {
        "batch_1000": {
            **summarise([r["notifications_per_s"] for r in ours], [r["rows_per_s"] for r in theirs]),
            "unit": "notifications/s",
            "service_runs": ours,
            "ceiling_runs": theirs,
            "rows_stored": stored,
            "errors": errors,
        }
    }
    print_ratios(f"Bulk ingest: POST /notifications/batch of {BATCH:,}, interleaved", results)
    params = {
        "seconds_per_round": seconds,
        "rounds": ROUNDS,
        "batch_size": BATCH,
        "client": f"{THREADS} Python threads, kept-alive http.client",
        "ceiling": f"1,000-row INSERT ... SELECT generate_series from {THREADS} connections",
    }
    write_result(NAME, quick, params, results, notes)
    return results


# A push notification for next week, as the API stores it, made by PostgreSQL itself 1,000 at a time.
_GENERATED_ROWS = """
INSERT INTO notification (id, channel, recipient_id, content, subject, title, data, timezone, scheduled_time,
    appropriate_delivery, due_at, status, attempt_count, attempts_at_force, forced, message_seq, api_host,
    created_at, updated_at)
SELECT gen_random_uuid(), 'push', 'user' || g, 'Your order has been shipped!', NULL, 'Order update', NULL,
    'UTC', due, true, due, 'Pending', 0, 0, false, 0, 'bench', made, made
FROM generate_series(1, 1000) AS g, (SELECT now() AT TIME ZONE 'UTC') AS m(made),
    (SELECT now() AT TIME ZONE 'UTC' + interval '7 days' + random() * interval '1 day') AS d(due)
"""


def table_ceiling(backing, seconds: float, *, connections: int) -> dict:
    """Rows/s the notification table takes in 1,000-row INSERTs from ``connections`` connections."""
    import psycopg2

    counts = [0] * connections
    deadline = time.monotonic() + seconds

    def insert(slot: int) -> None:
        conn = psycopg2.connect(backing.database_url)
        conn.autocommit = True
        with conn, conn.cursor() as cursor:
            while time.monotonic() < deadline:
                cursor.execute(_GENERATED_ROWS)
                counts[slot] += 1
        conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=insert, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return {
        "connections": connections,
        "statements": sum(counts),
        "rows_per_s": round(sum(counts) * 1000 / elapsed, 1),
        "seconds": round(elapsed, 2),
    }
