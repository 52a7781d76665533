"""The operators' dashboard at /dashboard: queues, schedule, workers, and actions on notifications.

Server-rendered pages with a little vanilla JavaScript and no third-party assets, so it works
offline. Every POST carries an anti-forgery token (see ``csrf``).
"""

from __future__ import annotations

from flask import Blueprint

blp = Blueprint(
    "dashboard",
    __name__,
    url_prefix="/dashboard",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

from api.dashboard import actions, csrf, views  # noqa: E402, F401  (register the routes on blp)
