# One image for the API and the workers: `gunicorn wsgi:app` (the default) or `./run_workers.sh`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=5000
WORKDIR /app

# Dependencies first, in their own layer, so code changes do not reinstall them.
COPY requirements.txt requirements-dashboard.txt ./
RUN pip install -r requirements.txt \
 && pip install --no-deps -r requirements-dashboard.txt

RUN useradd --create-home --uid 10001 app
COPY --chown=app:app . .
USER app

# 5000 the API (and /metrics/prometheus); 5001 and 5002 the push and email workers' metrics.
EXPOSE 5000 5001 5002
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD python -c "import urllib.request, os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/health', timeout=4)"
CMD ["gunicorn", "wsgi:app"]
