"""gunicorn settings: `gunicorn wsgi:app` picks this file up from the working directory.

gunicorn reads every module-level name here that is the name of a setting, so helpers are named apart.
"""

import glob
import os
import tempfile
import time
from typing import Any

from gunicorn import config as gunicorn_config
from gunicorn import glogging

# Each worker's prometheus_client decides at import whether to share its counts through files, so
# the directory is named here, in the master, before any worker starts.
os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", os.path.join(tempfile.gettempdir(), f"notification-api-metrics-{os.getuid()}")
)

import settings  # after the variable above is set

bind = f"0.0.0.0:{settings.PORT}"
# On the embedded default the web process also runs the workers: one process, or each would.
workers = settings.WEB_CONCURRENCY if settings.BROKER_URL else 1
worker_class = "gthread"
threads = settings.WEB_THREADS
# One line per request and per event, on stdout, like the workers'; access lines are queued for the
# writer thread as every other record is (GunicornLogger, below).
accesslog = "-"
errorlog = "/dev/stdout"
loglevel = settings.LOG_LEVEL.lower()
# The proxies gunicorn believes for wsgi.url_scheme are those the app believes (api/proxies.py).
forwarded_allow_ips = ",".join(settings.FORWARDED_ALLOW_IPS)


def on_starting(server):
    # Counts left by the workers of an earlier run must not be added to this run's.
    os.makedirs(settings.PROMETHEUS_MULTIPROC_DIR, exist_ok=True)
    for stale in glob.glob(os.path.join(settings.PROMETHEUS_MULTIPROC_DIR, "*.db")):
        os.remove(stale)


def child_exit(server, worker):
    # A dead worker's live gauges leave the sum; its counters stay in it.
    from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

    GunicornInternalPrometheusMetrics.mark_process_dead_on_child_exit(worker.pid)


class GunicornLogger(glogging.Logger):
    """gunicorn's logger, writing access lines cheaply.

    For each request gunicorn's own builds a dict of every header and environ variable and writes
    the line at once, under a lock. With the default format and the access log on stdout, this
    writes the same line, queued for the writer thread like every other record (with its prefix).
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        self._queued = cfg.accesslog == "-" and cfg.access_log_format == _COMBINED
        if self._queued:
            for handler in list(self.access_log.handlers):
                if getattr(handler, "_gunicorn", False):
                    self.access_log.removeHandler(handler)
            self.access_log.propagate = True  # to the root's handler, set up in each worker
        self._second: tuple[int, str] = (-1, "")

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not self._queued:
            super().access(resp, req, environ, request_time)
            return
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        sent = "-" if getattr(resp, "sent", None) is None else resp.sent
        request_line = f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}"
        self.access_log.info(
            f"{environ.get('REMOTE_ADDR', '-')} - {_quoted(self._get_user(environ) or '-')} {self.now()} "
            f'"{_quoted(request_line)}" {status} {sent} "{_quoted(environ.get("HTTP_REFERER", "-"))}" '
            f'"{_quoted(environ.get("HTTP_USER_AGENT", "-"))}"'
        )

    def now(self) -> str:
        # Formatted once per second, not once per request.
        second = int(time.time())
        if self._second[0] != second:
            self._second = (second, time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(second)))
        return self._second[1]


# gunicorn's default access_log_format, the Apache combined format, which GunicornLogger writes.
_COMBINED = gunicorn_config.AccessLogFormat.default


def _quoted(value: str) -> str:
    return value.replace('"', '\\"')


logger_class = GunicornLogger
