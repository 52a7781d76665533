"""gunicorn settings: `gunicorn wsgi:app` picks this file up from the working directory."""

import glob
import os
import tempfile

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
# writer thread as every other record is (logs.GunicornLogger).
accesslog = "-"
logger_class = "logs.GunicornLogger"
errorlog = "/dev/stdout"
loglevel = settings.LOG_LEVEL.lower()


def on_starting(server):
    # Counts left by the workers of an earlier run must not be added to this run's.
    os.makedirs(settings.PROMETHEUS_MULTIPROC_DIR, exist_ok=True)
    for stale in glob.glob(os.path.join(settings.PROMETHEUS_MULTIPROC_DIR, "*.db")):
        os.remove(stale)


def child_exit(server, worker):
    # A dead worker's live gauges leave the sum; its counters stay in it.
    from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

    GunicornInternalPrometheusMetrics.mark_process_dead_on_child_exit(worker.pid)
