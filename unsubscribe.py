"""One-click unsubscribe links (RFC 8058): a signed token naming a recipient and what it stops."""

from __future__ import annotations

from typing import NamedTuple

from itsdangerous import BadSignature, URLSafeSerializer

# Keeps these tokens apart from anything else the same key might ever sign.
_SALT = "list-unsubscribe"


class BadToken(ValueError):
    """The token was not made with this key, or was changed."""


class Subscription(NamedTuple):
    """A recipient and the category it would stop (None: all of its email)."""

    recipient_id: str
    category: str | None


def token_for(secret: str, recipient_id: str, category: str | None) -> str:
    """The URL-safe token for unsubscribing ``recipient_id`` from ``category`` (or all email)."""
    return str(URLSafeSerializer(secret, salt=_SALT).dumps([recipient_id, category]))


def read(secret: str, token: str) -> Subscription:
    """What a token names; BadToken unless it was signed with ``secret`` and is unchanged."""
    try:
        recipient_id, category = URLSafeSerializer(secret, salt=_SALT).loads(token)
    except (BadSignature, ValueError, TypeError) as exc:
        raise BadToken(str(exc)) from None
    if not isinstance(recipient_id, str) or not (category is None or isinstance(category, str)):
        raise BadToken("malformed")
    return Subscription(recipient_id, category)


def url_for(public_url: str, token: str) -> str:
    return f"{public_url}/unsubscribe/{token}"
