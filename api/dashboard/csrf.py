"""Anti-forgery tokens for the dashboard's forms: a random cookie that each POST must repeat.

A page from another site can make the browser send the cookie but cannot read it, so it cannot
put the same value in the form (double-submit). No server-side secret or session is needed, so
any web process can check a token another one issued.
"""

from __future__ import annotations

import hmac
import secrets

from flask import abort, g, request
from flask.wrappers import Response

from api.dashboard.blueprint import blp

COOKIE = "dashboard_csrf"
FIELD = "csrf_token"


def token() -> str:
    """The token for this browser: its cookie's, or a new one set on the response."""
    if "csrf_token" not in g:
        existing = request.cookies.get(COOKIE, "")
        g.csrf_token = existing if len(existing) == 64 else secrets.token_hex(32)
    return g.csrf_token


@blp.context_processor
def _expose() -> dict[str, object]:
    return {"csrf_token": token, "csrf_field": FIELD}


@blp.before_request
def _check() -> None:
    if request.method != "POST":
        return
    cookie, sent = request.cookies.get(COOKIE, ""), request.form.get(FIELD, "")
    if not cookie or not hmac.compare_digest(cookie, sent):
        abort(403, description="Missing or wrong anti-forgery token; reload the page and try again.")


@blp.after_request
def _set_cookie(response: Response) -> Response:
    if "csrf_token" in g and request.cookies.get(COOKIE) != g.csrf_token:
        response.set_cookie(
            COOKIE,
            g.csrf_token,
            path=blp.url_prefix,
            httponly=True,
            samesite="Strict",
            secure=request.is_secure,
        )
    return response
