"""Shared by the benchmarks: throwaway database and vhost, the service's processes, the push endpoint,
RSS, percentiles, tables and the results files."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RESULTS = Path(__file__).resolve().parent / "results"
PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RABBIT_HOST = os.environ.get("BENCH_RABBITMQ_HOST", "127.0.0.1")
RABBIT_USER = os.environ.get("BENCH_RABBITMQ_USER", "guest:guest")


class BenchError(RuntimeError):
    """Something the bench needs is missing or broke; the message says what to do."""


def log(message: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "") -> Any:
    """Await ``condition()`` becoming truthy and return its value; BenchError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"waited {timeout:.0f}s for {what or condition}")
        time.sleep(interval)


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

        connection = psycopg2.connect(PG_ADMIN_URL, connect_timeout=3)
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
    """A throwaway PostgreSQL database and RabbitMQ vhost."""

    database: str
    vhost: str

    @property
    def database_url(self) -> str:
        return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{self.database}"

    @property
    def broker_url(self) -> str:
        return f"amqp://{RABBIT_USER}@{RABBIT_HOST}:5672/{self.vhost}"

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


def _rabbitmqctl(*args: str) -> None:
    try:
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)
    except FileNotFoundError:
        raise BenchError("rabbitmqctl not found: the bench creates a vhost with it (run as root)") from None
    except subprocess.CalledProcessError as exc:
        raise BenchError(f"rabbitmqctl {' '.join(args)} failed: {exc.stderr.decode().strip()}") from None


@contextlib.contextmanager
def backing(name: str) -> Iterator[Backing]:
    """Create a database and a vhost for one benchmark; drop both afterwards."""
    import psycopg2

    suffix = f"{name}_{uuid.uuid4().hex[:8]}"
    made = Backing(database=f"bench_{suffix}", vhost=f"bench_{suffix}")
    try:
        admin = psycopg2.connect(PG_ADMIN_URL, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        raise BenchError(f"PostgreSQL unreachable at {PG_ADMIN_URL} (BENCH_POSTGRES_URL): {exc}") from None
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{made.database}"')
        _rabbitmqctl("add_vhost", made.vhost)
        try:
            _rabbitmqctl("set_permissions", "-p", made.vhost, RABBIT_USER.split(":")[0], ".*", ".*", ".*")
            yield made
        finally:
            with contextlib.suppress(BenchError):
                _rabbitmqctl("delete_vhost", made.vhost)
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{made.database}" WITH (FORCE)')
        admin.close()


# --- processes ------------------------------------------------------------------------------------


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the process (as a supervisor would), then SIGKILL its whole session if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    # Anything the process left behind in its session (a worker whose parent died).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


@dataclass
class Service:
    """The API under gunicorn and the push worker under run_workers.sh, as a user runs them."""

    backing: Backing
    workdir: Path
    settings: dict[str, str] = field(default_factory=dict)
    api: subprocess.Popen | None = None
    workers: subprocess.Popen | None = None
    base_url: str = ""

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": self.backing.database_url,
            "BROKER_URL": self.backing.broker_url,
            "OUTBOX_DIR": str(self.workdir / "outbox"),
            # Free ports, so that two runs (or a test suite) on the machine do not collide.
            "PUSH_METRICS_PORT": str(free_port()),
            "EMAIL_METRICS_PORT": str(free_port()),
            **self.settings,
        }

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        with open(self.workdir / f"{name}.log", "ab") as out:
            return subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def start_api(self) -> str:
        port = free_port()
        env = {**self.env(), "PORT": str(port)}
        self.api = self._spawn("api", [str(BIN / "gunicorn"), "wsgi:app"], env)
        self.base_url = f"http://127.0.0.1:{port}"
        wait_until(self._healthy, timeout=60, what=f"gunicorn on {self.base_url} (log {self.workdir})")
        return self.base_url

    def start_workers(self) -> None:
        """run_workers.sh for the push channel; returns once its scheduler runs."""
        self.workers = self._spawn("workers", [str(ROOT / "run_workers.sh"), "push"], self.env())
        wait_until(
            lambda: "Scheduler started" in self.log("workers"),
            timeout=60,
            what=f"the push worker's scheduler (log {self.workdir / 'workers.log'})",
        )

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _healthy(self) -> bool:
        if self.api is not None and self.api.poll() is not None:
            raise BenchError(f"gunicorn exited with {self.api.returncode}:\n{self.log('api')[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", int(self.base_url.rsplit(":", 1)[1]), timeout=5)
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        except OSError:
            return False

    def processes(self) -> dict[str, list[psutil.Process]]:
        """The service's processes by role: gunicorn master/worker, dramatiq main/worker."""
        roles: dict[str, list[psutil.Process]] = {}
        if self.api is not None and self.api.poll() is None:
            with contextlib.suppress(psutil.Error):
                master = psutil.Process(self.api.pid)
                roles["gunicorn master"] = [master]
                roles["gunicorn worker"] = master.children()
        if self.workers is not None and self.workers.poll() is None:
            with contextlib.suppress(psutil.Error):
                for proc in psutil.Process(self.workers.pid).children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        if "dramatiq" not in " ".join(proc.cmdline()):
                            continue
                        parent_is_dramatiq = "dramatiq" in " ".join(proc.parent().cmdline())
                        role = "dramatiq worker" if parent_is_dramatiq else "dramatiq main"
                        roles.setdefault(role, []).append(proc)
        return roles

    def rss(self) -> dict[str, list[float]]:
        """RSS in MiB of each of the service's processes, by role."""
        out: dict[str, list[float]] = {}
        for role, procs in self.processes().items():
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    out.setdefault(role, []).append(round(proc.memory_info().rss / 2**20, 1))
        return out

    def stop(self) -> None:
        for process in (self.workers, self.api):
            if process is not None:
                stop(process)


class Receiver:
    """The push endpoint (bench/receiver.py) in a process of its own."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.receiver"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        if len(line) != 2 or line[0] != "PORT":
            stop(self.process, 5)
            raise BenchError("the push receiver did not start")
        self.port = int(line[1])
        self.url = f"http://127.0.0.1:{self.port}/push"

    def _get(self, path: str) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def stats(self) -> dict[str, Any]:
        return self._get("/stats")

    def arrivals(self) -> dict[str, float]:
        return self._get("/arrivals")

    def stop(self) -> None:
        stop(self.process, 5)


class Profiler:
    """py-spy on the service's gunicorn and dramatiq workers, writing collapsed stacks (``--profile``)."""

    def __init__(self, service: Service, name: str, directory: Path) -> None:
        self.recorders: list[subprocess.Popen] = []
        if not (BIN / "py-spy").exists():
            raise BenchError(f"--profile needs py-spy: {BIN / 'pip'} install py-spy")
        directory.mkdir(parents=True, exist_ok=True)
        for role in ("gunicorn worker", "dramatiq worker"):
            for proc in service.processes().get(role, []):
                out = directory / f"{name}-{role.replace(' ', '-')}-{proc.pid}.txt"
                args = [str(BIN / "py-spy"), "record", "--pid", str(proc.pid), "--rate", "100"]
                args += ["--format", "raw", "--output", str(out), "--threads"]
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
def running(name: str, settings: dict[str, str], *, workers: bool = True, receiver: bool = False):
    """A throwaway database and vhost, the service on them (and a push receiver); all gone afterwards.

    With BENCH_PROFILE_DIR set (``--profile``), py-spy records the service's workers meanwhile.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    push = Receiver() if receiver else None
    try:
        with backing(name) as made:
            if push is not None:
                settings = {"PUSH_WEBHOOK_URL": push.url, **settings}
            service = Service(made, workdir, settings)
            profiler = None
            try:
                service.start_api()
                if workers:
                    service.start_workers()
                if os.environ.get("BENCH_PROFILE_DIR"):
                    profiler = Profiler(service, name, Path(os.environ["BENCH_PROFILE_DIR"]))
                yield service, push
            finally:
                if profiler is not None:
                    profiler.stop()
                service.stop()
    finally:
        if push is not None:
            push.stop()
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


def batch_body(items: list[dict[str, Any]]) -> bytes:
    return json.dumps({"notifications": items}).encode()


def push_item(i: int, scheduled_time: dt.datetime | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "channel": "push",
        "recipient_id": f"user{i % 10000}",
        "content": "Your order has been shipped!",
        "title": "Order update",
    }
    if scheduled_time is not None:
        item["scheduled_time"] = scheduled_time.isoformat()
    return item


# Notifications due "now" must not be moved to the next morning by the appropriate hours.
ALL_DAY = {"APPROPRIATE_HOURS_START": "0", "APPROPRIATE_HOURS_END": "24"}


def next_week() -> dt.datetime:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=7)).replace(
        hour=12, minute=0, second=0, microsecond=0
    )
