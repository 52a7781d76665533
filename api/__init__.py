"""The application factory: settings, storage, the Api and its blueprints, embedded workers."""

from __future__ import annotations

import atexit
import logging
from typing import Any

import peewee
import swagger_ui_bundle
from flask import Flask, send_from_directory
from flask_smorest import Api, abort

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
    )
    if test_config:
        app.config.update(test_config)
    logging.basicConfig(level=settings.LOG_LEVEL, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    storage.init_app(app)

    from api import auth, health, notifications, ratelimit

    # Authentication first: the rate limit counts per API key.
    auth.init_app(app)
    ratelimit.init_app(app)
    guards = [auth.SecurityDocs()] if app.config["API_KEYS"] else []
    guards += [ratelimit.RateLimitDocs()] if app.config["RATE_LIMIT"] else []
    api = Api(app, spec_kwargs={"extra_plugins": guards})

    api.register_blueprint(notifications.blp)
    api.register_blueprint(health.blp)

    @app.get("/docs/static/<path:filename>")
    def swagger_ui_static(filename: str):
        # Served from the installed package, so the docs work offline.
        return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename, max_age=86400)

    @app.errorhandler(peewee.OperationalError)
    @app.errorhandler(peewee.InterfaceError)
    def database_unavailable(exc: Exception):
        logger.error("Database unavailable: %s", exc)
        abort(503, message="The database is unavailable; try again shortly.")

    if app.config["RUN_WORKERS"]:
        _start_embedded_workers()
    return app


def _start_embedded_workers() -> None:
    """Run the actors and a scheduler in this process, on the in-process broker."""
    import dramatiq

    from actors import broker, delivery  # noqa: F401  (registers the actors)
    from actors.scheduler import SchedulerMiddleware
    from storage import notifications

    # Messages published by an earlier run of this process died with it; send them again.
    released = notifications.release_all_dispatches()
    if released:
        logger.info("Re-dispatching %d notifications accepted before the restart", released)
    broker.add_middleware(SchedulerMiddleware())
    worker = dramatiq.Worker(broker, worker_threads=settings.WORKER_THREADS)
    worker.start()
    atexit.register(worker.stop)
