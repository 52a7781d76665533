"""Bulk ingest: POST /notifications/batch with 1,000 notifications a request, from 2 and 4 client threads.

Also measured, as the database's ceiling: 1,000-row INSERTs of rows PostgreSQL makes itself, straight
into the same table with its indexes, from 2 connections (no HTTP, JSON, validation or Python).
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time

from bench.common import log, percentile, post_batches, print_table, running, write_result
from harness.payloads import batch_body, next_week, push_item

NAME = "bulk"
TARGET = "50,000 notifications/s accepted"
BATCH = 1000


def run(quick: bool, scale: float = 1.0) -> dict:
    seconds = 3 if quick else max(5, round(30 * scale))
    week = next_week()
    # A few distinct bodies (times spread over the week), encoded once so the client costs little CPU.
    bodies = [
        batch_body([push_item(i, week + dt.timedelta(seconds=(b * BATCH + i) * 7)) for i in range(BATCH)])
        for b in range(8)
    ]
    rows = []
    with running(NAME, {}) as (service, made, _):
        post_batches(service.base_url, iter(bodies[:2]), concurrency=2)  # warm-up
        for concurrency in (2, 4):
            log(f"{seconds}s of {BATCH}-notification batches from {concurrency} threads")
            deadline = time.monotonic() + seconds
            result = post_batches(
                service.base_url, itertools.cycle(bodies), concurrency=concurrency, deadline=deadline
            )
            rows.append(
                {
                    "concurrency": concurrency,
                    "batch_size": BATCH,
                    "seconds": round(result.elapsed, 2),
                    "requests": result.requests,
                    "accepted": result.accepted,
                    "notifications_per_s": round(result.accepted / result.elapsed, 1),
                    "p50_ms": round((percentile(result.latencies, 50) or 0) * 1000, 1),
                    "p99_ms": round((percentile(result.latencies, 99) or 0) * 1000, 1),
                    "errors": result.errors,
                    "error_samples": result.error_samples,
                }
            )
        stored = made.sql("SELECT count(*) FROM notification")[0][0]
        log(f"ceiling: {seconds}s of 1,000-row INSERTs into the table from 2 connections")
        table = table_ceiling(made, seconds, connections=2)
    print_table(
        f"Bulk ingest: POST /notifications/batch (target: {TARGET})",
        [
            "threads",
            "notifications/s",
            "of table ceiling",
            "batches",
            "p50 ms/batch",
            "p99 ms/batch",
            "errors",
        ],
        [
            [
                r["concurrency"],
                r["notifications_per_s"],
                f"{100 * r['notifications_per_s'] / table['rows_per_s']:.0f}%",
                r["requests"],
                r["p50_ms"],
                r["p99_ms"],
                r["errors"],
            ]
            for r in rows
        ]
        + [
            [
                "table ceiling (SQL, 2 connections)",
                table["rows_per_s"],
                "100%",
                table["statements"],
                "-",
                "-",
                0,
            ]
        ],
    )
    best = max(r["notifications_per_s"] for r in rows)
    results = {
        "runs": rows,
        "table_ceiling": table,
        "rows_stored": stored,
        "target": TARGET,
        "target_met": best >= 50000,
    }
    params = {"seconds": seconds, "batch_size": BATCH, "client": "Python threads, kept-alive http.client"}
    write_result(NAME, quick, params, results, [])
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
