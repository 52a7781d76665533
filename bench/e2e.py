"""End-to-end delivery: N due-now notifications to a local push endpoint, in alternating rounds with the
ceiling of a no-op Dramatiq actor (`-p 1 -t 8`) draining N messages on the same broker."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import BenchError, backing, log, post_batches, running, write_result
from bench.rounds import ROUNDS, interleave, print_ratios, summarise
from harness.payloads import batch_body, push_item
from harness.processes import ALL_DAY, BIN, ROOT, stop
from harness.waiting import wait_until

NAME = "e2e"
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
    """The pipeline (confirms on, the default) and the no-op drain of the same count, in turn."""
    n = 1000 if quick else max(1000, round(20000 * scale))
    timeout = 60 if quick else 300
    notes = []
    ours, theirs = interleave(
        lambda: pipeline(n, True, timeout), lambda: ceiling(n, 1, 8, timeout), ROUNDS, "webhook_delivery"
    )
    for r in ours:
        if not r["complete"]:
            notes.append(
                f"a round delivered only {r['received_unique']:,} of {n:,} within {timeout}s; "
                "its rate is over those"
            )
    duplicates = sum(r["duplicates"] for r in ours)
    results = {
        "webhook_delivery": {
            **summarise([r["deliveries_per_s"] for r in ours], [c["messages_per_s"] for c in theirs]),
            "unit": "deliveries/s",
            "service_runs": ours,
            "ceiling_runs": theirs,
            "duplicates": duplicates,
        }
    }
    print_ratios(f"End-to-end delivery of {n:,} due-now push notifications, interleaved", results)
    params = {
        "n": n,
        "rounds": ROUNDS,
        "timeout_s": timeout,
        "ingest": "POST /notifications/batch, 1000 per request, 2 client threads",
        "service": "gunicorn.conf.py defaults; run_workers.sh push (a process per core x 8 threads)",
        "rate": "unique deliveries / (last arrival at the endpoint - first batch request sent)",
        "ceiling": "bench/noop_actor.py under dramatiq -p 1 -t 8 draining n pre-queued messages",
    }
    write_result(NAME, quick, params, results, notes)
    return results
