"""The application factory: settings, storage, the Api and its blueprints, embedded workers."""

from __future__ import annotations

import atexit
import logging
from typing import Any

import swagger_ui_bundle
from flask import Flask, send_from_directory
from flask_smorest import Api
from werkzeug.exceptions import ServiceUnavailable

import logs
import settings
import storage

logger = logging.getLogger(__name__)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    import actors

    app = Flask(__name__)
    app.config.from_mapping(
        DATABASE_URL=settings.DATABASE_URL,
        # Without a broker server the web process delivers what it accepts itself.
        RUN_WORKERS=actors.EMBEDDED,
        API_TITLE="Notification service",
        API_VERSION="1.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        OPENAPI_SWAGGER_UI_URL="/docs/static/",
        MAX_CONTENT_LENGTH=settings.MAX_REQUEST_BYTES,
        API_KEYS=settings.API_KEYS,
        DASHBOARD_PASSWORD=settings.DASHBOARD_PASSWORD,
        RATE_LIMIT=settings.RATE_LIMIT,
        MAX_DATA_BYTES=settings.MAX_DATA_BYTES,
        MAX_DATA_DEPTH=settings.MAX_DATA_DEPTH,
        FORWARDED_ALLOW_IPS=settings.FORWARDED_ALLOW_IPS,
    )
    if test_config:
        app.config.update(test_config)
    logs.configure()

    storage.init_app(app)

    from api import auth, health, metrics, notifications, prometheus, proxies, ratelimit

    proxies.init_app(app)

    # Authentication first: the rate limit counts per API key.
    auth.init_app(app)
    ratelimit.init_app(app)
    guards = [auth.SecurityDocs()] if app.config["API_KEYS"] else []
    guards += [ratelimit.RateLimitDocs()] if app.config["RATE_LIMIT"] else []
    api = Api(app, spec_kwargs={"extra_plugins": guards})

    api.register_blueprint(notifications.blp)
    api.register_blueprint(health.blp)
    api.register_blueprint(metrics.blp)
    from api import dashboard

    app.register_blueprint(dashboard.blp)
    if actors.REDIS:
        from api.dashboard import dramatiq_dashboard

        dramatiq_dashboard.mount(app, actors.broker)

    @app.get("/docs/static/<path:filename>")
    def swagger_ui_static(filename: str):
        # Served from the installed package, so the docs work offline.
        return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename, max_age=86400)

    def database_unavailable(exc: Exception):
        logger.error("Database unavailable: %s", exc)
        storage.drop_connection()
        unavailable = ServiceUnavailable()
        unavailable.data = {"message": "The database is unavailable; try again shortly."}
        return api.handle_http_exception(unavailable)

    for unavailable_error in storage.UNAVAILABLE:
        app.register_error_handler(unavailable_error, database_unavailable)

    if app.config["RUN_WORKERS"]:
        from actors.metrics import DeliveryMetrics

        delivery_metrics = DeliveryMetrics()
        prometheus.init_app(app, *delivery_metrics.metrics.collectors())
        _start_embedded_workers(delivery_metrics)
    else:
        prometheus.init_app(app)
    return app


def _start_embedded_workers(*middleware: Any) -> None:
    """Run the actors and a scheduler in this process, on the in-process broker."""
    import dramatiq

    from actors import broker, delivery  # noqa: F401  (registers the actors)
    from actors.heartbeat import Heartbeat
    from actors.logcontext import LogContext
    from actors.scheduler import SchedulerMiddleware
    from storage import schedule

    # Messages published by an earlier run of this process died with it; send them again.
    released = schedule.release_all()
    if released:
        logger.info("Publishing again %d notifications accepted before the restart", released)
    for extra in (LogContext(), SchedulerMiddleware(), Heartbeat(), *middleware):
        broker.add_middleware(extra)
    worker = dramatiq.Worker(broker, worker_threads=settings.WORKER_THREADS, worker_timeout=100)
    worker.start()
    atexit.register(worker.stop)
