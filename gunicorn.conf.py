"""gunicorn settings: `gunicorn wsgi:app` picks this file up from the working directory."""

import settings

bind = f"0.0.0.0:{settings.PORT}"
# On the embedded default the web process also runs the workers: one process, or each would.
workers = settings.WEB_CONCURRENCY if settings.BROKER_URL else 1
worker_class = "gthread"
threads = settings.WEB_THREADS
accesslog = "-"
errorlog = "-"
