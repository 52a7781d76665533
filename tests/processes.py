"""The service's real processes for end-to-end tests: gunicorn and run_workers.sh, as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
            "SCHEDULER_INTERVAL": "0.2",
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
        if process.poll() is None:
            os.killpg(process.pid, sig)
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
