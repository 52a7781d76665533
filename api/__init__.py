"""The application factory: settings, storage, the Api and its blueprints, embedded workers."""

from __future__ import annotations

import atexit
import logging
from typing import Any

import dramatiq
import swagger_ui_bundle
from apispec import BasePlugin
from flask import Flask, Request, Response, send_from_directory
from flask.sessions import SessionInterface, SessionMixin
from flask.typing import ResponseReturnValue
from flask_smorest import Api
from werkzeug.exceptions import ServiceUnavailable

import actors
import logs
import settings
import storage
from actors import broker, delivery  # noqa: F401  (delivery registers the actors)
from actors.heartbeat import Heartbeat
from actors.logcontext import LogContext
from actors.metrics import DeliveryMetrics
from actors.scheduler import SchedulerMiddleware
from actors.scheduler.status_events import EventPublisherMiddleware
from api import (
    auth,
    dashboard,
    devices,
    health,
    metrics,
    notifications,
    prometheus,
    proxies,
    ratelimit,
    recipients,
    schemas,
    templates,
    unsubscribe,
)
from api.dashboard import dramatiq_dashboard
from storage import schedule

logger = logging.getLogger(__name__)


class DatabaseUnavailable(ServiceUnavailable):
    """The 503 of a request the database could not serve; flask-smorest words it from ``data``."""

    data = {"message": "The database is unavailable; try again shortly."}


class _NoSessions(SessionInterface):
    """The service keeps no sessions (the dashboard's CSRF check needs none): no cookie read or signed.

    Flask's default built a signing serializer for every request, about 5% of an ingest request's CPU.
    """

    def open_session(self, app: Flask, request: Request) -> SessionMixin:
        return self.make_null_session(app)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        pass


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.session_interface = _NoSessions()
    # Every setting under its own name: the web app reads them from app.config, tests override them.
    app.config.from_object(settings)
    app.config.from_mapping(
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
    )
    if test_config:
        app.config.update(test_config)
    logs.configure()

    storage.init_app(app)

    proxies.init_app(app)

    # Authentication first: the rate limit counts per API key.
    auth.init_app(app)
    ratelimit.init_app(app)
    guards: list[BasePlugin] = [auth.SecurityDocs()] if app.config["API_KEYS"] else []
    guards += [ratelimit.RateLimitDocs()] if app.config["RATE_LIMIT"] else []
    api = Api(app, spec_kwargs={"extra_plugins": guards})
    schemas.document_limits(api.ma_plugin.converter, app.config)

    api.register_blueprint(notifications.blp)
    api.register_blueprint(templates.blp)
    api.register_blueprint(devices.blp)
    api.register_blueprint(recipients.blp)
    api.register_blueprint(health.blp)
    api.register_blueprint(metrics.blp)
    app.register_blueprint(dashboard.blp)
    app.register_blueprint(unsubscribe.blp)
    if actors.REDIS:
        dramatiq_dashboard.mount(app, broker)

    @app.get("/docs/static/<path:filename>")
    def swagger_ui_static(filename: str) -> ResponseReturnValue:
        # Served from the installed package, so the docs work offline.
        return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename, max_age=86400)

    def database_unavailable(exc: Exception) -> ResponseReturnValue:
        logger.error("Database unavailable: %s", exc)
        storage.drop_connection()
        return api.handle_http_exception(DatabaseUnavailable())

    for unavailable_error in storage.UNAVAILABLE:
        app.register_error_handler(unavailable_error, database_unavailable)

    if app.config["RUN_WORKERS"]:
        delivery_metrics = DeliveryMetrics()
        prometheus.init_app(app, *delivery_metrics.metrics.collectors())
        _start_embedded_workers(delivery_metrics)
    else:
        prometheus.init_app(app)
    return app


def _start_embedded_workers(*middleware: dramatiq.Middleware) -> None:
    """Run the actors and a scheduler in this process, on the in-process broker."""
    # Messages published by an earlier run of this process died with it; send them again.
    released = schedule.release_all()
    if released:
        logger.info("Publishing again %d notifications accepted before the restart", released)
    for extra in (LogContext(), SchedulerMiddleware(), EventPublisherMiddleware(), Heartbeat(), *middleware):
        broker.add_middleware(extra)
    worker = dramatiq.Worker(broker, worker_threads=settings.WORKER_THREADS, worker_timeout=100)
    worker.start()
    atexit.register(worker.stop)
