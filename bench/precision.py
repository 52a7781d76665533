"""Scheduling precision: N notifications due within one minute; lateness = delivered_at - due_at."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from bench.common import log, post_batches, print_table, running, summary, write_result
from bench.rounds import precision_met
from harness.payloads import batch_body, push_item
from harness.processes import ALL_DAY
from harness.waiting import wait_until

NAME = "precision"
TARGET = "p99 lateness under 0.25 s, max under 1 s"
BATCH = 1000
WINDOW = 60.0  # seconds; 10 in quick mode


def _bodies(n: int, start: dt.datetime, window: float):
    for first in range(0, n, BATCH):
        items = [
            push_item(i, start + dt.timedelta(seconds=window * i / n))
            for i in range(first, min(n, first + BATCH))
        ]
        yield batch_body(items)


def _lateness(made, push, give_up: float) -> dict[str, Any]:
    """Lateness by the database's delivered_at and by arrival at the endpoint, in seconds."""
    rows = made.sql(
        "SELECT id::text, extract(epoch FROM due_at), extract(epoch FROM delivered_at) FROM notification"
    )
    arrivals = push.arrivals()
    recorded = [float(d) - float(due) for _, due, d in rows if d is not None]
    arrived = [arrivals[i] - float(due) for i, due, _ in rows if i in arrivals]
    # Not delivered by the end: at least this late; counted so that p99 is a lower bound, not flattered.
    missing = [give_up - float(due) for _, due, d in rows if d is None]
    return {
        "rows": len(rows),
        "undelivered_at_end": len(missing),
        "by_delivered_at": summary(recorded + missing),
        "by_arrival": summary(arrived + missing),
        "earliest_s": min(recorded, default=None),
    }


def run(quick: bool, scale: float = 1.0) -> dict:
    n = 3000 if quick else max(1000, round(100_000 * scale))
    window = 10.0 if quick else WINDOW
    notes = []
    with running(NAME, ALL_DAY, receiver=True) as (service, made, push):
        assert push is not None
        # Time to accept them all first (at a pessimistic 2,000/s), so none is due before it is accepted.
        lead = (5 if quick else 15) + n / 2000
        start = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=lead)
        log(
            f"accepting {n:,} notifications due from {start:%H:%M:%S} "
            f"to {start + dt.timedelta(seconds=window):%H:%M:%S}"
        )
        accepted = post_batches(service.base_url, _bodies(n, start, window), concurrency=2)
        ingest_done = time.time()
        if ingest_done > start.timestamp():
            notes.append(
                f"accepting took {accepted.elapsed:.0f}s, past the window's start: lateness includes that"
            )
        log(f"accepted {accepted.accepted:,} in {accepted.elapsed:.1f}s; awaiting deliveries")
        # Give up at most 8 minutes after the window ends, to bound the benchmark.
        give_up = start.timestamp() + window + (60 if quick else 480)
        wait_until(lambda: push.stats()["unique"] >= n, give_up - time.time(), interval=0.5, fail=False)
        finished = min(time.time(), give_up)
        result = _lateness(made, push, finished)
    if result["undelivered_at_end"]:
        notes.append(
            f"{result['undelivered_at_end']:,} of {n:,} not delivered "
            f"{finished - start.timestamp() - window:.0f}s "
            "after the window; counted as late as that (the percentiles are lower bounds)"
        )
    by_db, by_arrival = result["by_delivered_at"], result["by_arrival"]
    print_table(
        f"Scheduling precision: {n:,} notifications due within {window:.0f} s (target: {TARGET})",
        ["lateness by", "p50 s", "p90 s", "p99 s", "max s", "undelivered"],
        [
            [
                "delivered_at - due_at",
                by_db["p50"],
                by_db["p90"],
                by_db["p99"],
                by_db["max"],
                result["undelivered_at_end"],
            ],
            [
                "endpoint arrival - due_at",
                by_arrival["p50"],
                by_arrival["p90"],
                by_arrival["p99"],
                by_arrival["max"],
                None,
            ],
        ],
    )
    results = {
        "n": n,
        "accept_seconds": round(accepted.elapsed, 2),
        "accept_errors": accepted.errors,
        **result,
        "target": TARGET,
        "target_met": precision_met(by_db),
    }
    params = {
        "n": n,
        "window_s": window,
        "lead_s": lead,
        "service": "gunicorn.conf.py defaults; run_workers.sh push (a process per core x 8 threads); 0-24 h",
    }
    write_result(NAME, quick, params, results, notes)
    return results
