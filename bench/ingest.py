"""Ingest: POST /notifications/push under gunicorn; load from wrk (another process), 16 and 64 connections.

Also measured, as the ceiling: bench/bare_app.py, Flask answering the same POST with 202 and nothing
else, under gunicorn with the service's worker class, processes and threads.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
from collections.abc import Iterator

from bench.common import log, print_table, running, write_result
from bench.loadgen import WRK_MISSING, have_wrk, load
from harness.network import free_port
from harness.payloads import next_week
from harness.processes import BIN, ROOT, stop
from harness.waiting import wait_until

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
    with running(NAME, {}) as (service, made, _):
        url = service.base_url + "/notifications/push"
        for concurrency in (16, 64):
            load(url, body, concurrency, warmup)
            log(f"{seconds}s at concurrency {concurrency}")
            rows.append({"what": "service", **load(url, body, concurrency, seconds)})
        stored = made.sql("SELECT count(*) FROM notification")[0][0]
    with bare_flask() as bare_url:
        for concurrency in (16, 64):
            load(bare_url, body, concurrency, warmup)
            log(f"ceiling: bare Flask, {seconds}s at concurrency {concurrency}")
            rows.append({"what": "bare Flask (ceiling)", **load(bare_url, body, concurrency, seconds)})
    ceiling = {r["concurrency"]: r["requests_per_s"] for r in rows if r["what"] != "service"}
    print_table(
        f"Ingest: POST /notifications/push (target: {TARGET})",
        ["what", "concurrency", "requests/s", "of ceiling", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"],
        [
            [
                r["what"],
                r["concurrency"],
                r["requests_per_s"],
                f"{100 * r['requests_per_s'] / ceiling[r['concurrency']]:.0f}%",
                r["p50_ms"],
                r["p90_ms"],
                r["p99_ms"],
                r["max_ms"],
                r["http_errors"] + r["socket_errors"] + r["timeouts"],
            ]
            for r in rows
        ],
    )
    at64 = next(r for r in rows if r["what"] == "service" and r["concurrency"] == 64)
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
        "ceiling": "gunicorn bench.bare_app:app, same worker class, processes and threads, no access log",
    }
    write_result(NAME, quick, params, results, notes)
    return results


@contextlib.contextmanager
def bare_flask() -> Iterator[str]:
    """bench/bare_app.py under gunicorn as the service runs (gunicorn.conf.py's worker settings)."""
    import settings

    port = free_port()
    args = [
        str(BIN / "gunicorn"),
        "bench.bare_app:app",
        "--config",
        "/dev/null",
        "--bind",
        f"127.0.0.1:{port}",
    ]
    args += ["--worker-class", "gthread", "--workers", str(settings.WEB_CONCURRENCY)]
    args += ["--threads", str(settings.WEB_THREADS), "--log-level", "warning"]
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(
            args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_until(lambda: _answers(port), timeout=30, what="gunicorn bench.bare_app:app")
            yield f"http://127.0.0.1:{port}/notifications/push"
        finally:
            stop(process)


def _answers(port: int) -> bool:
    import http.client

    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("POST", "/notifications/push", body=b"{}", headers={"Content-Type": "application/json"})
        return conn.getresponse().status == 202
    except OSError:
        return False
