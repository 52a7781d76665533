"""The official dramatiq-dashboard at /dashboard/dramatiq, for deployments on Dramatiq's Redis broker.

It reads Redis directly and knows nothing of RabbitMQ, hence only with ``BROKER_URL=redis://``.
It is installed apart (``pip install --no-deps -r requirements-dashboard.txt``): its metadata still
asks for dramatiq<2 and redis<5, though it works with the versions this service pins.

It is served by a Flask view, not by its own WSGI middleware around the app: a request for it
then passes the same API key or dashboard password check, and the same rate limit, as /dashboard.
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
from flask import Flask, request
from werkzeug.wrappers import Response

logger = logging.getLogger(__name__)

PREFIX = "/dashboard/dramatiq"
# The dramatiq-dashboard's anti-forgery cookie, which its forms repeat (double submit).
CSRF_COOKIE = "__dd_csrf"


def mount(app: Flask, broker: dramatiq.Broker) -> bool:
    """Serve the dashboard of ``broker`` (a RedisBroker) under ``PREFIX``; False when it is not installed."""
    try:
        from dramatiq_dashboard.application import DashboardApp
    except ImportError:
        logger.warning("dramatiq-dashboard is not installed; %s is not served", PREFIX)
        return False
    dashboard = DashboardApp(broker, PREFIX)

    def dramatiq_dashboard(path: str = "") -> Response:
        environ: dict[str, Any] = {
            **request.environ,
            "PATH_INFO": request.environ["PATH_INFO"][len(PREFIX) :],
            # Bounded by MAX_CONTENT_LENGTH, unlike the raw input it would read.
            "wsgi.input": request.stream,
        }
        return _strict_csrf_cookie(Response.from_app(dashboard, environ))

    for rule in (PREFIX + "/", PREFIX + "/<path:path>"):
        app.add_url_rule(rule, "dramatiq_dashboard", dramatiq_dashboard, methods=["GET", "POST"])
    return True


def _strict_csrf_cookie(response: Response) -> Response:
    """Set the dashboard's token cookie as /dashboard sets its own: SameSite=Strict, Secure on HTTPS.

    It sets it for every path, for any site's requests, and over plain HTTP too: a cross-site form
    would carry the cookie (and an HTTP Basic password) along with a value it could not read.
    """
    cookies = response.headers.getlist("Set-Cookie")
    ours = [cookie for cookie in cookies if cookie.startswith(f"{CSRF_COOKIE}=")]
    if not ours:
        return response
    response.headers.remove("Set-Cookie")
    for cookie in cookies:
        if cookie not in ours:
            response.headers.add("Set-Cookie", cookie)
    token = ours[-1].split(";", 1)[0].partition("=")[2]
    response.set_cookie(
        CSRF_COOKIE, token, path=PREFIX, httponly=True, samesite="Strict", secure=request.is_secure
    )
    return response
