"""Shared by the benchmarks: their database and vhost, the service running on them, percentiles,
tables, the results files and a batch client. The processes, servers and receivers are harness's."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from harness.processes import BIN, ROOT, Service
from harness.receivers import CountingPushReceiver
from harness.servers import Servers, Unavailable, throwaway_name

RESULTS = Path(__file__).resolve().parent / "results"
SERVERS = Servers.from_environment("BENCH")


class BenchError(RuntimeError):
    """Something the bench needs is missing or broke; the message says what to do."""


def log(message: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- numbers and output ---------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of ``values`` (sorted or not); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil
    return ordered[int(rank) - 1]


def summary(values: list[float]) -> dict[str, float | int | None]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "max": ordered[-1] if ordered else None,
    }


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(title: str, headers: list[str], rows: list[list[Any]]) -> None:
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  " + "  ".join("-" * w for w in widths))
    for row in cells:
        first, *rest = zip(row, widths, strict=True)
        print("  " + "  ".join([first[0].ljust(first[1]), *(c.rjust(w) for c, w in rest)]))
    print(flush=True)


def _run(args: list[str], timeout: float = 30) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _wrk_version() -> str | None:
    try:  # wrk --version exits 1
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=5).stdout
    except OSError:
        return None
    return out.split(" [")[0].strip() or None


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    postgres = rabbitmq = None
    with contextlib.suppress(Exception):
        import psycopg2

        connection = psycopg2.connect(SERVERS.postgres_admin_url, connect_timeout=3)
        with contextlib.closing(connection) as conn, conn.cursor() as cursor:
            cursor.execute("SHOW server_version")
            postgres = cursor.fetchone()[0]
    with contextlib.suppress(Exception):
        rabbitmq = json.loads(_run(["rabbitmqctl", "-q", "status", "--formatter", "json"]))[
            "rabbitmq_version"
        ]
    commit = _run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).strip()
    dirty = bool(_run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]).strip())
    return {
        "cpu": cpu,
        "cores": psutil.cpu_count(logical=True),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgresql": postgres,
        "rabbitmq": rabbitmq,
        "wrk": _wrk_version(),
        "commit": commit + ("-dirty" if dirty else ""),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def write_result(name: str, quick: bool, params: dict[str, Any], results: Any, notes: list[str]) -> Path:
    """Write ``bench/results/<name>.json`` (``<name>-quick.json`` in quick mode) with the machine."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}{'-quick' if quick else ''}.json"
    document = {
        "benchmark": name,
        "mode": "quick" if quick else "full",
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "params": params,
        "results": results,
        "notes": notes,
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    for note in notes:
        print(f"  note: {note}")
    print(f"  wrote {path.relative_to(ROOT)}", flush=True)
    return path


# --- PostgreSQL database and RabbitMQ vhost -------------------------------------------------------


@dataclass
class Backing:
    """A throwaway PostgreSQL database and RabbitMQ vhost of one name."""

    name: str

    @property
    def database(self) -> str:
        return self.name

    @property
    def vhost(self) -> str:
        return self.name

    @property
    def database_url(self) -> str:
        return SERVERS.database_url(self.name)

    @property
    def broker_url(self) -> str:
        return SERVERS.broker_url(self.name)

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        import psycopg2

        with contextlib.closing(psycopg2.connect(self.database_url)) as conn, conn.cursor() as cursor:
            cursor.execute(query, args)
            return cursor.fetchall() if cursor.description else []

    def queues(self) -> dict[str, dict[str, int]]:
        """Ready and unacknowledged messages and memory (bytes) of each queue of the vhost."""
        out = _run(
            [
                *("rabbitmqctl", "-q", "list_queues", "-p", self.vhost, "name", "messages_ready"),
                *("messages_unacknowledged", "memory", "--formatter", "json"),
            ]
        )
        try:
            rows = json.loads(out)
        except ValueError:
            return {}
        return {
            r["name"]: {
                "ready": r["messages_ready"],
                "unacked": r["messages_unacknowledged"],
                "memory_bytes": r["memory"],
            }
            for r in rows
        }


def rabbitmq_memory() -> dict[str, int] | None:
    """The RabbitMQ node's memory (whole node: other users of the broker count too)."""
    with contextlib.suppress(ValueError, KeyError):
        status = json.loads(_run(["rabbitmqctl", "-q", "status", "--formatter", "json"]))
        total = status["memory"]["total"]
        return {"rss_bytes": total["rss"], "allocated_bytes": total["allocated"]}
    return None


@contextlib.contextmanager
def backing(name: str) -> Iterator[Backing]:
    """Create a database and a vhost for one benchmark; drop both afterwards."""
    made = Backing(throwaway_name(f"bench_{name}", 8))
    SERVERS.create_database(made.database)
    try:
        SERVERS.create_vhost(made.vhost)
        try:
            yield made
        finally:
            with contextlib.suppress(Unavailable):
                SERVERS.delete_vhost(made.vhost)
    finally:
        SERVERS.drop_database(made.database)


# --- the service, profiled ----------------------------------------------------------------------


class Profiler:
    """py-spy on the service's gunicorn and dramatiq workers, writing collapsed stacks (``--profile``)."""

    def __init__(self, service: Service, name: str, directory: Path) -> None:
        self.recorders: list[subprocess.Popen] = []
        if not (BIN / "py-spy").exists():
            raise BenchError(f"--profile needs py-spy: {BIN / 'pip'} install py-spy")
        directory.mkdir(parents=True, exist_ok=True)
        for role in ("gunicorn worker", "dramatiq worker"):
            for proc in service.by_role().get(role, []):
                out = directory / f"{name}-{role.replace(' ', '-')}-{proc.pid}.txt"
                args = [str(BIN / "py-spy"), "record", "--pid", str(proc.pid), "--rate", "100"]
                # --idle: a request's wall time includes its waits (locks, the database), which is
                # where the ingest path's time goes as much as into CPU.
                args += ["--format", "raw", "--output", str(out), "--threads", "--idle"]
                self.recorders.append(
                    subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                )
        log(f"profiling {len(self.recorders)} processes with py-spy into {directory}")

    def stop(self) -> None:
        for recorder in self.recorders:
            if recorder.poll() is None:
                recorder.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for recorder in self.recorders:
            try:
                recorder.wait(30)
            except subprocess.TimeoutExpired:
                recorder.kill()


@contextlib.contextmanager
def running(
    name: str, settings: dict[str, str], *, workers: bool = True, receiver: bool = False
) -> Iterator[tuple[Service, Backing, CountingPushReceiver | None]]:
    """A throwaway database and vhost, the service on them as deployed (and a push receiver); all gone
    afterwards.

    With BENCH_PROFILE_DIR set (``--profile``), py-spy records the service's workers meanwhile.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    with contextlib.ExitStack() as stack:
        push = stack.enter_context(CountingPushReceiver()) if receiver else None
        made = stack.enter_context(backing(name))
        if push is not None:
            settings = {"PUSH_WEBHOOK_URL": push.url, **settings}
        service = Service(
            workdir,
            as_deployed=True,
            DATABASE_URL=made.database_url,
            BROKER_URL=made.broker_url,
            **settings,
        )
        stack.callback(service.close)
        service.start_api()
        if workers:
            service.start_workers("push", ready=True)
        if os.environ.get("BENCH_PROFILE_DIR"):
            profiler = Profiler(service, name, Path(os.environ["BENCH_PROFILE_DIR"]))
            stack.callback(profiler.stop)
        yield service, made, push
    log(f"service logs in {workdir}")


# --- a batch client (threads, keep-alive) ----------------------------------------------------------


@dataclass
class BatchRun:
    requests: int = 0
    accepted: int = 0
    errors: int = 0
    first_sent: float = 0.0
    last_done: float = 0.0
    latencies: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    @property
    def elapsed(self) -> float:
        return max(self.last_done - self.first_sent, 1e-9)


def post_batches(
    base_url: str, bodies: Iterator[bytes], *, concurrency: int, deadline: float | None = None
) -> BatchRun:
    """POST each body to /notifications/batch from ``concurrency`` threads, until the bodies run out
    or ``deadline`` (time.monotonic()) passes."""
    host, port = base_url.removeprefix("http://").split(":")
    run = BatchRun()
    lock = threading.Lock()

    def next_body() -> bytes | None:
        with lock:
            if deadline is not None and time.monotonic() > deadline:
                return None
            return next(bodies, None)

    def client() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        headers = {"Content-Type": "application/json"}
        while (body := next_body()) is not None:
            sent = time.time()
            try:
                conn.request("POST", "/notifications/batch", body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                status, data = 0, repr(exc).encode()
            done = time.time()
            with lock:
                run.requests += 1
                run.first_sent = min(run.first_sent or sent, sent)
                run.last_done = max(run.last_done, done)
                if status == 202:
                    run.accepted += json.loads(data)["count"]
                    run.latencies.append(done - sent)
                else:
                    run.errors += 1
                    if len(run.error_samples) < 3:
                        run.error_samples.append(f"{status}: {data[:300]!r}")
        conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return run
