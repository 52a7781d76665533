"""The service's real processes for end-to-end tests: gunicorn and run_workers.sh, as a user runs them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Await ``condition()`` becoming truthy and return its value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {condition}")
        time.sleep(interval)


class Service:
    """Starts the API under gunicorn and the workers with run_workers.sh, with the given settings."""

    def __init__(self, tmp_path: Path, **settings: str) -> None:
        self.tmp_path = tmp_path
        self.env = {
            **os.environ,
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),
            "OUTBOX_DIR": str(tmp_path / "outbox"),
            "METRICS_ENABLED": "false",
            "WORKER_PROCESSES": "1",  # keeps the suite light on a 2-core machine
            "SCHEDULER_INTERVAL": "0.2",
            # Notifications due now go now, whatever the hour the suite runs at (the rules for
            # appropriate hours have tests of their own, with the time given).
            "APPROPRIATE_HOURS_START": "0",
            "APPROPRIATE_HOURS_END": "24",
            "LOG_LEVEL": "INFO",
            **settings,
        }
        self.processes: list[subprocess.Popen] = []
        self.base_url = ""

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.tmp_path / f"{name}-{len(self.processes)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.processes.append(process)
        return process

    def start_api(self, workers: int = 1) -> str:
        port = free_port()
        self._spawn(
            "api",
            [str(BIN / "gunicorn"), "wsgi:app", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)],
        )
        self.base_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: self.reachable(), timeout=30)
        return self.base_url

    def start_workers(self, *channels: str) -> subprocess.Popen:
        return self._spawn("workers", [str(ROOT / "run_workers.sh"), *channels])

    def reachable(self) -> bool:
        try:
            return self.request("GET", "/health")[0] in (200, 503)
        except OSError:
            return False

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read() or b"null")

    def notify(self, channel: str, **body: Any) -> str:
        status, answer = self.request("POST", f"/notifications/{channel}", body)
        assert status == 202, answer
        return answer["notification_id"]

    def get(self, notification_id: str) -> dict[str, Any]:
        status, answer = self.request("GET", f"/notifications/{notification_id}")
        assert status == 200, answer
        return answer

    def await_status(self, notification_id: str, status: str, timeout: float = 20.0) -> dict[str, Any]:
        return wait_until(lambda: (n := self.get(notification_id))["status"] == status and n, timeout)

    @staticmethod
    def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal a started process as a supervisor would; SIGKILL takes its whole process tree."""
        if process.poll() is None:
            if sig == signal.SIGKILL:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)
        return process.wait(timeout)

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                try:
                    self.stop(process)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()

    def logs(self) -> str:
        return "\n".join(
            f"== {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in self.tmp_path.glob("*.log")
        )


class TcpRelay:
    """A TCP relay on a local port to a real server, which a test can open, cut and restore.

    Stands between the service and RabbitMQ or PostgreSQL to make them unreachable and back.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    def open(self) -> TcpRelay:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def cut(self) -> None:
        """Refuse new connections and drop the open ones, as a stopped server would."""
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
                connection.close()
            self._connections.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._connections.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._connections.discard(source)
            source.close()


def via(relay: TcpRelay, url: str) -> str:
    """``url`` with its host and port replaced by the relay's."""
    parts = urlsplit(url)
    credentials = f"{parts.username}:{parts.password}@" if parts.password else f"{parts.username}@"
    return urlunsplit(parts._replace(netloc=f"{credentials}127.0.0.1:{relay.port}"))
