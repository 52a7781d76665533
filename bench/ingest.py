"""Ingest: POST /notifications/push under gunicorn; load from wrk (another process), 16 and 64 connections."""

from __future__ import annotations

import json

from bench.common import log, next_week, print_table, running, write_result
from bench.loadgen import WRK_MISSING, have_wrk, load

NAME = "ingest"
TARGET = "at least 2,500 requests/s with p99 under 50 ms at concurrency 64"


def run(quick: bool, scale: float = 1.0) -> dict:
    seconds = 3 if quick else max(5, round(30 * scale))
    warmup = 1 if quick else 5
    body = json.dumps(
        {
            "recipient_id": "user123",
            "content": "Your order has been shipped!",
            "title": "Order update",
            # Next week: the API's work alone; the workers run but have nothing due.
            "scheduled_time": next_week().isoformat(),
        }
    ).encode()
    notes = [] if have_wrk() else [WRK_MISSING]
    rows = []
    with running(NAME, {}) as (service, _):
        url = service.base_url + "/notifications/push"
        for concurrency in (16, 64):
            load(url, body, concurrency, warmup)
            log(f"{seconds}s at concurrency {concurrency}")
            rows.append(load(url, body, concurrency, seconds))
        stored = service.backing.sql("SELECT count(*) FROM notification")[0][0]
    print_table(
        f"Ingest: POST /notifications/push (target: {TARGET})",
        ["concurrency", "requests/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "tool"],
        [
            [
                r["concurrency"],
                r["requests_per_s"],
                r["p50_ms"],
                r["p90_ms"],
                r["p99_ms"],
                r["max_ms"],
                r["http_errors"] + r["socket_errors"] + r["timeouts"],
                r["tool"],
            ]
            for r in rows
        ],
    )
    at64 = rows[-1]
    results = {
        "runs": rows,
        "rows_stored": stored,
        "target": TARGET,
        "target_met": at64["requests_per_s"] >= 2500 and at64["p99_ms"] < 50,
    }
    params = {
        "seconds": seconds,
        "warmup_seconds": warmup,
        "service": "gunicorn.conf.py defaults + run_workers.sh push",
    }
    write_result(NAME, quick, params, results, notes)
    return results
