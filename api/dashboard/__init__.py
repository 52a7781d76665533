"""The operators' dashboard at /dashboard: queues, schedule, workers, and actions on notifications.

Server-rendered pages with a little vanilla JavaScript and no third-party assets, so it works
offline. Every POST carries an anti-forgery token (see ``csrf``).
"""

from __future__ import annotations

from api.dashboard import actions, csrf, views  # noqa: F401  (they register their routes on blp)
from api.dashboard.blueprint import blp

__all__ = ["blp"]
