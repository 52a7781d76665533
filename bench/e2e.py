"""End-to-end delivery: N due-now notifications to a local push endpoint, with publisher confirms on and
off, against the ceiling of a no-op Dramatiq actor on the same broker (`-p 1 -t 8` and `-p 2 -t 8`)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import BenchError, backing, log, post_batches, print_table, running, write_result
from harness.payloads import batch_body, push_item
from harness.processes import ALL_DAY, BIN, ROOT, stop
from harness.waiting import wait_until

NAME = "e2e"
TARGET = "the pipeline reaches at least half of the no-op ceiling"
BATCH = 1000


def _bodies(n: int):
    for start in range(0, n, BATCH):
        yield batch_body([push_item(i) for i in range(start, min(n, start + BATCH))])


def delivery_stats(made) -> dict[str, Any]:
    """Delivered rows and accept-to-delivery latency (delivered_at - created_at), from the database."""
    row = made.sql(
        """SELECT count(*) FILTER (WHERE status = 'Delivered'),
                  count(*),
                  percentile_disc(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - created_at)),
                  percentile_disc(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - created_at)),
                  max(extract(epoch FROM delivered_at - created_at)),
                  max(attempt_count)
           FROM notification"""
    )[0]
    return {
        "delivered_rows": row[0],
        "rows": row[1],
        "accept_to_delivery_p50_s": float(row[2]) if row[2] is not None else None,
        "accept_to_delivery_p99_s": float(row[3]) if row[3] is not None else None,
        "accept_to_delivery_max_s": float(row[4]) if row[4] is not None else None,
        "max_attempts": row[5],
    }


def pipeline(n: int, confirms: bool, timeout: float) -> dict[str, Any]:
    settings = {**ALL_DAY, "PUBLISH_CONFIRMS": "true" if confirms else "false"}
    with running(f"{NAME}_{'confirms' if confirms else 'noconfirms'}", settings, receiver=True) as (
        service,
        made,
        push,
    ):
        assert push is not None
        log(f"pipeline, PUBLISH_CONFIRMS={str(confirms).lower()}: accepting {n:,} due-now notifications")
        accepted = post_batches(service.base_url, _bodies(n), concurrency=2)
        if accepted.errors:
            raise BenchError(f"batch POSTs failed: {accepted.error_samples}")
        log(f"accepted in {accepted.elapsed:.1f}s; awaiting deliveries")
        wait_until(lambda: push.stats()["unique"] >= n, timeout, interval=0.25, fail=False)
        stats = push.stats()
        db = delivery_stats(made)
    complete = stats["unique"] >= n
    span = max(stats["last"] - accepted.first_sent, 1e-9)
    return {
        "publish_confirms": confirms,
        "n": n,
        "accept_seconds": round(accepted.elapsed, 2),
        "first_accept_to_last_delivery_s": round(span, 2),
        "deliveries_per_s": round(stats["unique"] / span, 1),
        "received": stats["count"],
        "received_unique": stats["unique"],
        "duplicates": stats["count"] - stats["unique"],
        "complete": complete,
        **db,
    }


def _enqueue_noop(broker_url: str, n: int) -> float:
    from dramatiq import Message
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker = RabbitmqBroker(url=broker_url, confirm_delivery=False)
    broker.declare_queue("noop")
    started = time.monotonic()
    for _ in range(n):
        broker.enqueue(Message(queue_name="noop", actor_name="noop", args=(), kwargs={}, options={}))
    elapsed = time.monotonic() - started
    broker.close()
    return elapsed


def ceiling(n: int, processes: int, threads: int, timeout: float) -> dict[str, Any]:
    """Fill a queue with n no-op messages, start `dramatiq -p P -t T`, time the drain."""
    with backing("noop") as made, tempfile.TemporaryDirectory(prefix="bench-noop-") as tmp:
        enqueue_s = _enqueue_noop(made.broker_url, n)
        log(f"no-op ceiling -p {processes} -t {threads}: {n:,} messages queued in {enqueue_s:.1f}s; draining")
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "BENCH_BROKER_URL": made.broker_url,
            "BENCH_NOOP_DIR": tmp,
        }
        args = [str(BIN / "dramatiq"), "bench.noop_actor", "-p", str(processes), "-t", str(threads)]
        with open(Path(tmp) / "dramatiq.log", "wb") as out:
            worker = subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

        def processed() -> list[dict[str, Any]]:
            return [json.loads(p.read_text()) for p in Path(tmp).glob("*.json")]

        try:
            wait_until(
                lambda: sum(s["count"] for s in processed()) >= n or worker.poll() is not None,
                timeout,
                interval=0.2,
                fail=False,
            )
        finally:
            stop(worker)
        stats = processed()
        count = sum(s["count"] for s in stats)
    first = min((s["first"] for s in stats if s["first"]), default=0.0)
    last = max((s["last"] for s in stats), default=0.0)
    span = max(last - first, 1e-9)
    return {
        "processes": processes,
        "threads": threads,
        "n": n,
        "processed": count,
        "complete": count >= n,
        "drain_seconds": round(span, 2),
        "messages_per_s": round(count / span, 1),
        "enqueue_per_s_without_confirms": round(n / enqueue_s, 1),
    }


def run(quick: bool, scale: float = 1.0) -> dict:
    n = 1000 if quick else max(1000, round(20000 * scale))
    timeout = 60 if quick else 300
    notes = []
    runs = [pipeline(n, confirms, timeout) for confirms in (True, False)]
    ceilings = [ceiling(n, processes, 8, timeout) for processes in (1, 2)]
    for r in runs:
        if not r["complete"]:
            notes.append(
                f"PUBLISH_CONFIRMS={r['publish_confirms']}: only {r['received_unique']:,} of {n:,} delivered "
                f"within {timeout}s; the rate is over those"
            )
    base = ceilings[0]["messages_per_s"]
    print_table(
        f"End-to-end delivery of {n:,} due-now push notifications (target: {TARGET})",
        ["what", "per s", "of -p1 ceiling", "span s", "accept s", "p50 accept->deliv s", "p99 s", "dups"],
        [
            [
                f"pipeline, confirms {'on' if r['publish_confirms'] else 'off'}",
                r["deliveries_per_s"],
                f"{r['deliveries_per_s'] / base:.0%}",
                r["first_accept_to_last_delivery_s"],
                r["accept_seconds"],
                r["accept_to_delivery_p50_s"],
                r["accept_to_delivery_p99_s"],
                r["duplicates"],
            ]
            for r in runs
        ]
        + [
            [
                f"no-op actor -p {c['processes']} -t {c['threads']}",
                c["messages_per_s"],
                f"{c['messages_per_s'] / base:.0%}",
                c["drain_seconds"],
                None,
                None,
                None,
                None,
            ]
            for c in ceilings
        ],
    )
    best = max(r["deliveries_per_s"] for r in runs)
    results = {
        "pipeline": runs,
        "noop_ceiling": ceilings,
        "target": TARGET,
        "target_met": best >= base / 2,
    }
    params = {
        "n": n,
        "timeout_s": timeout,
        "ingest": "POST /notifications/batch, 1000 per request, 2 client threads",
        "service": "gunicorn.conf.py defaults; run_workers.sh push (a process per core x 8 threads)",
        "rate": "unique deliveries / (last arrival at the endpoint - first batch request sent)",
    }
    write_result(NAME, quick, params, results, notes)
    return results
