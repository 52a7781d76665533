"""A no-op actor on its own RabbitMQ broker: the ceiling of Dramatiq on this machine.

Run as ``BENCH_BROKER_URL=amqp://... BENCH_NOOP_DIR=dir dramatiq bench.noop_actor -p 1 -t 8``. Each
worker process writes ``<pid>.json`` into ``BENCH_NOOP_DIR`` every 0.2 s with how many messages it
processed and when the first and the last of them finished.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

QUEUE = "noop"

broker = RabbitmqBroker(url=os.environ["BENCH_BROKER_URL"], confirm_delivery=False)
dramatiq.set_broker(broker)

_lock = threading.Lock()
_stats = {"count": 0, "first": 0.0, "last": 0.0}
_reporter: threading.Thread | None = None


def _report() -> None:
    path = Path(os.environ["BENCH_NOOP_DIR"]) / f"{os.getpid()}.json"
    while True:
        with _lock:
            text = json.dumps(_stats)
        path.with_suffix(".tmp").write_text(text)
        path.with_suffix(".tmp").replace(path)
        time.sleep(0.2)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def noop() -> None:
    global _reporter
    now = time.time()
    with _lock:
        _stats["count"] += 1
        _stats["first"] = _stats["first"] or now
        _stats["last"] = now
        if _reporter is None:
            _reporter = threading.Thread(target=_report, daemon=True)
            _reporter.start()
