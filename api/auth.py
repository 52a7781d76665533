"""Who may call the service: API keys for every endpoint but /health and /unsubscribe, a dashboard password.

Keys are compared as sha256 digests with ``hmac.compare_digest`` against every configured key, so
neither the answer's content nor its timing tells which part of a wrong key was wrong.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from apispec import BasePlugin
from flask import Flask, current_app, g, request
from flask_smorest import abort

OPEN_PATH = "/health"
# One-click unsubscribe: the signed token in the path is the credential.
TOKEN_PREFIX = "/unsubscribe/"
DASHBOARD_PREFIX = "/dashboard"
ANONYMOUS = "anonymous"
_SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"apiKeyHeader": []}]


@dataclass(frozen=True)
class Access:
    """What a request may present: digests of the API keys, and of the dashboard password if any."""

    keys: tuple[bytes, ...]
    dashboard_password: bytes | None

    @classmethod
    def from_config(cls, keys: Iterable[str], dashboard_password: str) -> Access:
        return cls(
            keys=tuple(
                bytes.fromhex(key.removeprefix("sha256:")) if key.startswith("sha256:") else _digest(key)
                for key in keys
            ),
            dashboard_password=_digest(dashboard_password) if dashboard_password else None,
        )


def init_app(app: Flask) -> None:
    """Check every request before it reaches a view; the config's API_KEYS and DASHBOARD_PASSWORD."""
    app.extensions["access"] = Access.from_config(app.config["API_KEYS"], app.config["DASHBOARD_PASSWORD"])
    app.before_request(_authenticate)


def caller() -> str:
    """Who is calling, for per-client state: a key's fingerprint, ``dashboard``, or ``anonymous``."""
    return g.get("caller", ANONYMOUS)


def require_dashboard_access() -> None:
    """Let a dashboard request through with an API key or the dashboard password, else answer 401.

    The app already calls this for every path under /dashboard; a blueprint may call it too.
    """
    access: Access = current_app.extensions["access"]
    if not access.keys and access.dashboard_password is None:
        return  # nothing configured: the dashboard is as open as the API
    identity = _key_identity(access)
    if identity is None and access.dashboard_password is not None:
        credentials = request.authorization
        password = credentials.password if credentials is not None and credentials.type == "basic" else None
        if password and hmac.compare_digest(_digest(password), access.dashboard_password):
            identity = "dashboard"
    if identity is None:
        _deny('Basic realm="dashboard", Bearer' if access.dashboard_password else "Bearer")
    g.caller = identity


def _authenticate() -> None:
    if request.path == OPEN_PATH or request.path.startswith(TOKEN_PREFIX):
        return
    if request.path.startswith(DASHBOARD_PREFIX):
        require_dashboard_access()
        return
    access: Access = current_app.extensions["access"]
    if not access.keys:
        return
    identity = _key_identity(access)
    if identity is None:
        _deny("Bearer")
    g.caller = identity


def _key_identity(access: Access) -> str | None:
    """The fingerprint of the valid API key the request presents, or None."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    presented = credentials.strip() if scheme.lower() == "bearer" else request.headers.get("X-API-Key", "")
    if not presented or not access.keys:
        return None
    digest = _digest(presented)
    matched = False
    for key in access.keys:  # all of them, so the time taken does not depend on which one matches
        matched |= hmac.compare_digest(digest, key)
    return f"key:{digest.hex()[:32]}" if matched else None


def _deny(challenge: str) -> None:
    # One message for a missing, malformed or wrong key: nothing to learn from the difference.
    abort(401, message="Authentication required.", headers={"WWW-Authenticate": challenge})


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


class SecurityDocs(BasePlugin):
    """Puts the API keys into the OpenAPI spec: both schemes, required with a 401 on all but /health."""

    def init_spec(self, spec: Any) -> None:
        super().init_spec(spec)
        spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})
        spec.components.security_scheme(
            "apiKeyHeader", {"type": "apiKey", "in": "header", "name": "X-API-Key"}
        )

    def operation_helper(
        self, path: str | None = None, operations: dict | None = None, **kwargs: Any
    ) -> None:
        for operation in (operations or {}).values():
            if path == OPEN_PATH:
                operation["security"] = []
                continue
            operation.setdefault("security", _SECURITY)
            operation.setdefault("responses", {}).setdefault("401", "UNAUTHORIZED")
