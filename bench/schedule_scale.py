"""Scale of the schedule: N notifications for next week. Time to accept them, database size, broker
queues and memory, worker RSS and CPU, and the time of one scheduler pass, before and after."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from typing import Any

import psutil

from bench.common import log, post_batches, print_table, rabbitmq_memory, running, write_result
from harness.payloads import batch_body, next_week, push_item

NAME = "schedule_scale"
TARGET = "broker and worker memory flat"
BATCH = 1000
WEEK = 7 * 24 * 3600


def _bodies(n: int, start: dt.datetime):
    for first in range(0, n, BATCH):
        items = [
            push_item(i, start + dt.timedelta(seconds=WEEK * i / n))
            for i in range(first, min(n, first + BATCH))
        ]
        yield batch_body(items)


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def _postgres_backends(database: str) -> list[psutil.Process]:
    """The PostgreSQL server processes serving ``database`` (their titles name it)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error, TypeError):
            if f" {database} " in " ".join(proc.info["cmdline"] or []):
                found.append(proc)
    return found


def _scheduler_pass_seconds(database_url: str) -> float:
    """One scheduler query (take_due for push) on the bench database, rolled back."""
    import storage
    from storage import schedule

    database = storage.configure(database_url)
    try:
        with database.connection_context(), database.atomic() as transaction:
            started = time.perf_counter()
            schedule.take_due(horizon=60, lease=600, limit=500, channels=["push"])
            elapsed = time.perf_counter() - started
            transaction.rollback()
    finally:
        database.close_all() if hasattr(database, "close_all") else database.close()
    return elapsed


def snapshot(service, made, seconds: float) -> dict[str, Any]:
    """Sizes, depths, memory, and the CPU the idle service spends over ``seconds``."""
    procs = service.by_role()
    dramatiq = procs.get("dramatiq main", []) + procs.get("dramatiq worker", [])
    backends = _postgres_backends(made.database)
    cpu_workers, cpu_pg = _cpu_seconds(dramatiq), _cpu_seconds(backends)
    time.sleep(seconds)
    cpu_workers, cpu_pg = _cpu_seconds(dramatiq) - cpu_workers, _cpu_seconds(backends) - cpu_pg
    sizes = made.sql(
        """SELECT pg_database_size(current_database()),
                  pg_total_relation_size('notification'), pg_total_relation_size('notification_event'),
                  (SELECT count(*) FROM notification)"""
    )[0]
    return {
        "rows": sizes[3],
        "database_mib": round(sizes[0] / 2**20, 1),
        "notification_table_mib": round(sizes[1] / 2**20, 1),
        "event_table_mib": round(sizes[2] / 2**20, 1),
        "queues": made.queues(),
        "rabbitmq_node_memory_mib": {k: round(v / 2**20, 1) for k, v in (rabbitmq_memory() or {}).items()},
        "rss_mib": service.rss(),
        "idle_cpu_percent_workers": round(100 * cpu_workers / seconds, 2),
        "idle_cpu_percent_postgres": round(100 * cpu_pg / seconds, 2),
        "postgres_backends": len(backends),
        "scheduler_pass_ms": round(_scheduler_pass_seconds(made.database_url) * 1000, 2),
    }


def run(quick: bool, scale: float = 1.0) -> dict:
    n = 20_000 if quick else max(10_000, round(1_000_000 * scale))
    budget = 60 if quick else 480
    notes = []
    with running(NAME, {}) as (service, made, _):
        idle = 3 if quick else 10
        log("before: sizes, queues, memory and idle CPU")
        before = snapshot(service, made, idle)
        log(f"accepting {n:,} notifications for next week (at most {budget}s)")
        accepted = post_batches(
            service.base_url, _bodies(n, next_week()), concurrency=2, deadline=time.monotonic() + budget
        )
        if accepted.accepted < n:
            notes.append(
                f"accepting stopped after {budget}s at {accepted.accepted:,} of {n:,} "
                "(the full size would exceed the time bound); the figures are for that many"
            )
        log(
            f"accepted {accepted.accepted:,} in {accepted.elapsed:.0f}s; "
            "after: sizes, queues, memory, idle CPU"
        )
        after = snapshot(service, made, idle)
    rate = accepted.accepted / accepted.elapsed

    def queue_total(snap: dict[str, Any]) -> int:
        return sum(q["ready"] + q["unacked"] for q in snap["queues"].values())

    def worker_rss(snap: dict[str, Any]) -> float:
        return sum(snap["rss_mib"].get("dramatiq worker", [])) + sum(snap["rss_mib"].get("dramatiq main", []))

    print_table(
        f"Scale of the schedule: {accepted.accepted:,} notifications for next week (target: {TARGET}); "
        f"accepted in {accepted.elapsed:.0f}s = {rate:,.0f}/s",
        [
            *("when", "rows", "db MiB", "queued msgs", "queue mem KiB", "rabbit rss MiB", "dramatiq RSS MiB"),
            *("idle CPU% workers", "idle CPU% pg", "sched pass ms"),
        ],
        [
            [
                label,
                s["rows"],
                s["database_mib"],
                queue_total(s),
                round(sum(q["memory_bytes"] for q in s["queues"].values()) / 1024, 1),
                s["rabbitmq_node_memory_mib"].get("rss_bytes"),
                worker_rss(s),
                s["idle_cpu_percent_workers"],
                s["idle_cpu_percent_postgres"],
                s["scheduler_pass_ms"],
            ]
            for label, s in (("before", before), ("after", after))
        ],
    )
    results = {
        "n": n,
        "accepted": accepted.accepted,
        "accept_seconds": round(accepted.elapsed, 1),
        "accepted_per_s": round(rate, 1),
        "accept_errors": accepted.errors,
        "before": before,
        "after": after,
        "target": TARGET,
        "target_met": queue_total(after) == queue_total(before)
        and worker_rss(after) < worker_rss(before) * 1.2 + 5,
    }
    notes.append("RabbitMQ node memory is the whole node's: other users of the broker move it too")
    params = {
        "n": n,
        "time_budget_s": budget,
        "ingest": "POST /notifications/batch, 1000 a request, 2 threads",
    }
    write_result(NAME, quick, params, results, notes)
    return results
