"""RATE_LIMIT per API key: a fixed-window counter in the database, so every gunicorn process shares it."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from apispec import BasePlugin
from flask import Flask, current_app, request
from flask_smorest import abort

from api import auth
from storage import ratelimit as store

_swept = {"window": -1}
_sweep_lock = threading.Lock()


def init_app(app: Flask) -> None:
    """Count every request but /health once it is authenticated; RATE_LIMIT is (count, seconds) or None."""
    app.config.setdefault("RATE_LIMIT_CLOCK", time.time)
    if app.config["RATE_LIMIT"]:
        app.before_request(_count)


def _count() -> None:
    if request.path == auth.OPEN_PATH:
        return
    limit, seconds = current_app.config["RATE_LIMIT"]
    now = current_app.config["RATE_LIMIT_CLOCK"]()
    window = int(now // seconds)
    client = auth.caller()
    if client == auth.ANONYMOUS:  # no API keys: each client address has its own count
        client = f"addr:{request.remote_addr}"
    made = store.hit(client, window)
    _sweep(window)
    if made > limit:
        retry_after = max(1, math.ceil((window + 1) * seconds - now))
        abort(
            429,
            message=f"Rate limit of {limit} requests per {seconds} seconds exceeded.",
            headers={"Retry-After": str(retry_after)},
        )


def _sweep(window: int) -> None:
    """Once per window and process, delete the counters no request can touch any more."""
    with _sweep_lock:
        if _swept["window"] == window:
            return
        _swept["window"] = window
    store.forget_before(window - 1)


class RateLimitDocs(BasePlugin):
    """Puts the 429 answer, with its Retry-After header, on every operation but /health."""

    def operation_helper(
        self, path: str | None = None, operations: dict | None = None, **kwargs: Any
    ) -> None:
        if path == auth.OPEN_PATH:
            return
        for operation in (operations or {}).values():
            operation.setdefault("responses", {}).setdefault(
                "429",
                {
                    "description": "Too many requests for this API key; retry after Retry-After seconds",
                    "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
            )
