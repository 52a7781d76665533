"""Ingest: POST /notifications/push under gunicorn at 64 connections from wrk (another process),
in alternating rounds with its ceiling; plain, and with API_KEYS and RATE_LIMIT set.

Also measured, as the ceiling: bench/bare_app.py, Flask answering the same POST with 202 and nothing
else, under gunicorn with the service's worker class, processes and threads.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
from collections.abc import Iterator

from bench.common import running, write_result
from bench.loadgen import WRK_MISSING, have_wrk, load
from bench.rounds import ROUNDS, interleave, print_ratios, summarise
from harness.network import free_port
from harness.payloads import next_week
from harness.processes import BIN, ROOT, stop
from harness.waiting import wait_until

NAME = "ingest"
CONCURRENCY = 64
API_KEY = "bench-key-0123456789abcdef"
# High enough never to refuse: the figure is the cost of checking the key and counting the request.
RATE_LIMIT = "100000000/minute"


def run(quick: bool, scale: float = 1.0) -> dict:
    """POST /notifications/push at c=64, in alternating rounds with bare Flask: plain, then with keys."""
    seconds = 2 if quick else max(3, round(8 * scale))
    warmup = 1 if quick else 3
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
    results: dict = {}
    variants = [
        ("push_c64", {}, None),
        ("push_c64_keys_limit", {"API_KEYS": API_KEY, "RATE_LIMIT": RATE_LIMIT}, API_KEY),
    ]
    with bare_flask() as bare_url:
        for key, settings, api_key in variants:
            with running(f"{NAME}_{key}", settings) as (service, made, _):
                url = service.base_url + "/notifications/push"
                load(url, body, CONCURRENCY, warmup, api_key=api_key)
                load(bare_url, body, CONCURRENCY, warmup)
                ours, theirs = interleave(
                    lambda url=url, api_key=api_key: load(url, body, CONCURRENCY, seconds, api_key=api_key),
                    lambda: load(bare_url, body, CONCURRENCY, seconds),
                    ROUNDS,
                    key,
                )
                stored = made.sql("SELECT count(*) FROM notification")[0][0]
            errors = sum(r["http_errors"] + r["socket_errors"] + r["timeouts"] for r in ours)
            if errors:
                notes.append(f"{key}: {errors} errors over the service's rounds")
            results[key] = {
                **summarise(
                    [r["requests_per_s"] for r in ours],
                    [r["requests_per_s"] for r in theirs],
                    service_p99=[r["p99_ms"] for r in ours],
                    ceiling_p99=[r["p99_ms"] for r in theirs],
                ),
                "unit": "requests/s",
                "service_runs": ours,
                "ceiling_runs": theirs,
                "rows_stored": stored,
                "errors": errors,
            }
    print_ratios(f"Ingest: POST /notifications/push at c={CONCURRENCY}, interleaved", results)
    params = {
        "seconds_per_round": seconds,
        "rounds": ROUNDS,
        "concurrency": CONCURRENCY,
        "warmup_seconds": warmup,
        "service": "gunicorn.conf.py defaults + run_workers.sh push",
        "ceiling": "gunicorn bench.bare_app:app, same worker class, processes and threads, no access log",
        "keys_limit": f"API_KEYS=<one key> (sent as X-API-Key), RATE_LIMIT={RATE_LIMIT}",
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
