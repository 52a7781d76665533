"""Memory: RSS of the gunicorn and dramatiq processes at idle, under load (due-now POSTs that the workers
deliver to a local endpoint) and after the load."""

from __future__ import annotations

import json
import threading
import time

from bench.common import log, print_table, running, write_result
from bench.loadgen import WRK_MISSING, have_wrk, load
from harness.processes import ALL_DAY
from harness.waiting import wait_until

NAME = "memory"


def _peak(samples: list[dict[str, list[float]]]) -> dict[str, float]:
    peak: dict[str, float] = {}
    for sample in samples:
        for role, values in sample.items():
            peak[role] = max(peak.get(role, 0.0), *values)
    return peak


def run(quick: bool, scale: float = 1.0) -> dict:
    seconds = 3 if quick else max(5, round(30 * scale))
    body = json.dumps({"recipient_id": "user123", "content": "Your order has been shipped!"}).encode()
    notes = [] if have_wrk() else [WRK_MISSING]
    with running(NAME, ALL_DAY, receiver=True) as (service, made, push):
        assert push is not None
        time.sleep(3)
        idle = service.rss()
        samples: list[dict[str, list[float]]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.5):
                samples.append(service.rss())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        log(f"{seconds}s of due-now POST /notifications/push at concurrency 16, then the workers drain")
        load_result = load(service.base_url + "/notifications/push", body, 16, seconds)
        under_load = _peak(samples)
        stored = made.sql("SELECT count(*) FROM notification")[0][0]
        wait_until(lambda: push.stats()["unique"] >= stored, 30 if quick else 120, interval=0.5, fail=False)
        stop.set()
        sampler.join()
        draining = _peak(samples)
        delivered = push.stats()["unique"]
        stored = made.sql("SELECT count(*) FROM notification")[0][0]
        time.sleep(2)
        after = service.rss()
    roles = sorted(set(idle) | set(after))
    rows = []
    for role in roles:
        rows.append(
            {
                "process": role,
                "count": len(idle.get(role, [])),
                "idle_mib": max(idle.get(role, [0])),
                "peak_under_load_mib": under_load.get(role),
                "peak_incl_drain_mib": draining.get(role),
                "after_mib": max(after.get(role, [0])),
            }
        )
    print_table(
        f"Memory: RSS (MiB, the largest process of each kind) idle, under {seconds}s of load, after",
        ["process", "count", "idle", "peak under load", "peak incl. drain", "after"],
        [list(r.values()) for r in rows],
    )
    if delivered < stored:
        notes.append(f"only {delivered:,} of {stored:,} delivered when sampling stopped")
    results = {
        "rss": rows,
        "load": load_result,
        "accepted": stored,
        "delivered": delivered,
        "idle_detail_mib": idle,
        "after_detail_mib": after,
    }
    params = {"load_seconds": seconds, "concurrency": 16, "sample_interval_s": 0.5}
    write_result(NAME, quick, params, results, notes)
    return results
