"""The service's real processes as a user runs them: the API under gunicorn, workers under run_workers.sh."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from harness.network import free_port
from harness.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# Notifications due now go now, whatever the hour of the run (the rules for appropriate hours have
# tests of their own, with the time given).
ALL_DAY = {"APPROPRIATE_HOURS_START": "0", "APPROPRIATE_HOURS_END": "24"}

# The suite's settings unless a test says otherwise: light on a 2-core machine, quick to dispatch.
TEST_SETTINGS = {
    "METRICS_ENABLED": "false",
    "WORKER_PROCESSES": "1",
    "WEB_CONCURRENCY": "1",
    "SCHEDULER_INTERVAL": "0.2",
    "LOG_LEVEL": "INFO",
    **ALL_DAY,
}


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    """Signal a started process as a supervisor would and return its exit code; SIGKILL takes its whole
    process tree, and so does a process that outlives ``timeout``."""
    if process.poll() is None:
        if sig == signal.SIGKILL:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        code = process.wait()
    # Anything the process left behind in its session (a worker whose parent died).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    return code


class Service:
    """Starts the API under gunicorn and the workers with run_workers.sh, with the given settings.

    The suite's settings (TEST_SETTINGS) apply unless ``as_deployed``, the benchmarks' mode: then every
    setting is at its default but for those given. Either way the run's files (outbox, metrics
    directories, a log per process) are in ``workdir`` and the metrics ports are free ones, so that
    services running side by side on the machine do not collide.
    """

    def __init__(self, workdir: Path, *, as_deployed: bool = False, **settings: str) -> None:
        self.workdir = workdir
        self.as_deployed = as_deployed
        self.env = {
            **os.environ,
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),
            "OUTBOX_DIR": str(workdir / "outbox"),
            "TMPDIR": str(workdir),  # where run_workers.sh keeps each channel's metrics directory
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / "api-metrics"),
            "PUSH_METRICS_PORT": str(free_port()),
            # With a broker a key must be set; the API and the workers sign and check with the same.
            "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_hex(32),
            "EMAIL_METRICS_PORT": str(free_port()),
            "WEBHOOKS_METRICS_PORT": str(free_port()),
            **({} if as_deployed else TEST_SETTINGS),
            **settings,
        }
        self.api: subprocess.Popen | None = None
        self.base_url = ""
        self._logs: dict[subprocess.Popen, Path] = {}  # every process started, and its log

    def _spawn(self, name: str, args: list[str], **env: str) -> subprocess.Popen:
        count = sum(path.stem.split("-")[0] == name for path in self._logs.values())
        path = self.workdir / (f"{name}-{count + 1}.log" if count else f"{name}.log")
        with open(path, "ab") as log:
            process = subprocess.Popen(
                args,
                cwd=ROOT,
                env={**self.env, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._logs[process] = path
        return process

    def start_api(self) -> str:
        """gunicorn wsgi:app on a free port; returns its base URL once it answers."""
        port = free_port()
        args = [str(BIN / "gunicorn"), "wsgi:app"]
        if not self.as_deployed:
            args += ["--bind", f"127.0.0.1:{port}"]  # the suite's services answer on loopback only
        self.api = api = self._spawn("api", args, PORT=str(port))
        self.base_url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: self._running(api) and self.reachable(),
            timeout=60,
            what=f"gunicorn on {self.base_url} (log {self._logs[api]})",
        )
        return self.base_url

    def start_workers(self, *channels: str, ready: bool = False) -> subprocess.Popen:
        """run_workers.sh for ``channels`` (both by default); with ``ready``, returns once each one's
        scheduler runs."""
        process = self._spawn("workers", [str(ROOT / "run_workers.sh"), *channels])
        if ready:
            wait_until(
                lambda: (
                    self._running(process)
                    and self.log(process).count("Scheduler started") >= (len(channels) or 2)
                ),
                timeout=60,
                what=f"the workers' schedulers (log {self._logs[process]})",
            )
        return process

    def _running(self, process: subprocess.Popen) -> bool:
        if process.poll() is not None:
            raise RuntimeError(
                f"{process.args!r} exited with {process.returncode}:\n{self.log(process)[-3000:]}"
            )
        return True

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
        return wait_until(
            lambda: (n := self.get(notification_id))["status"] == status and n,
            timeout,
            what=f"notification {notification_id} {status}",
        )

    @staticmethod
    def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """The module's stop(), for a test that holds the service."""
        return stop(process, sig, timeout)

    def close(self) -> None:
        """Stop every process started, the last first."""
        for process in reversed(self._logs):
            stop(process)

    def log(self, process: subprocess.Popen) -> str:
        path = self._logs[process]
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        """The end of each process's log, under its name."""
        return "\n".join(
            f"== {path.name}\n{path.read_text(errors='replace')[-4000:]}" for path in self._logs.values()
        )

    def by_role(self) -> dict[str, list[psutil.Process]]:
        """The service's running processes by role: gunicorn master/worker, dramatiq main/worker."""
        roles: dict[str, list[psutil.Process]] = {}
        for process in self._logs:
            if process.poll() is not None:
                continue
            with contextlib.suppress(psutil.Error):
                if process is self.api:
                    master = psutil.Process(process.pid)
                    roles.setdefault("gunicorn master", []).append(master)
                    roles.setdefault("gunicorn worker", []).extend(master.children())
                    continue
                for proc in psutil.Process(process.pid).children(recursive=True):
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
        for role, procs in self.by_role().items():
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    out.setdefault(role, []).append(round(proc.memory_info().rss / 2**20, 1))
        return out
