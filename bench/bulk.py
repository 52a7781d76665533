"""Bulk ingest: POST /notifications/batch with 1,000 notifications a request, from 2 and 4 client threads."""

from __future__ import annotations

import datetime as dt
import itertools
import time

from bench.common import (
    batch_body,
    log,
    next_week,
    percentile,
    post_batches,
    print_table,
    push_item,
    running,
    write_result,
)

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
    with running(NAME, {}) as (service, _):
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
        stored = service.backing.sql("SELECT count(*) FROM notification")[0][0]
    print_table(
        f"Bulk ingest: POST /notifications/batch (target: {TARGET})",
        ["threads", "notifications/s", "batches", "p50 ms/batch", "p99 ms/batch", "errors"],
        [
            [r["concurrency"], r["notifications_per_s"], r["requests"], r["p50_ms"], r["p99_ms"], r["errors"]]
            for r in rows
        ],
    )
    best = max(r["notifications_per_s"] for r in rows)
    results = {"runs": rows, "rows_stored": stored, "target": TARGET, "target_met": best >= 50000}
    params = {"seconds": seconds, "batch_size": BATCH, "client": "Python threads, kept-alive http.client"}
    write_result(NAME, quick, params, results, [])
    return results
