"""One-click unsubscribe (RFC 8058): POST turns a preference off; GET only shows the button that does.

The signed token in the path is the credential, so these routes take no API key. GET changes
nothing, because mail scanners follow every link in a message.
"""

from __future__ import annotations

from flask import Blueprint, current_app, render_template
from flask.typing import ResponseReturnValue

import unsubscribe
from api import usecases

blp = Blueprint("unsubscribe", __name__, url_prefix="/unsubscribe", template_folder="pages")


def _what(subscription: unsubscribe.Subscription) -> str:
    return "all email" if subscription.category is None else f"{subscription.category} email"


def _read(token: str) -> unsubscribe.Subscription | None:
    try:
        return unsubscribe.read(current_app.config["SECRET_KEY"], token)
    except unsubscribe.BadToken:
        return None


def _invalid() -> ResponseReturnValue:
    text = "This unsubscribe link is not valid. Nothing was changed."
    return render_template("unsubscribe.html", title="Invalid link", text=text, ask=False), 400


@blp.get("/<path:token>")
def confirm(token: str) -> ResponseReturnValue:
    """The page with the button; changes nothing by itself."""
    subscription = _read(token)
    if subscription is None:
        return _invalid()
    text = f"Stop receiving {_what(subscription)} from us?"
    return render_template("unsubscribe.html", title="Unsubscribe", text=text, ask=True)


@blp.post("/<path:token>")
def one_click(token: str) -> ResponseReturnValue:
    """Turn the preference the token names off (the mail client's one-click POST, or the button)."""
    subscription = _read(token)
    if subscription is None:
        return _invalid()
    usecases.unsubscribe(subscription.recipient_id, subscription.category)
    text = f"You will no longer receive {_what(subscription)} from us."
    return render_template("unsubscribe.html", title="Unsubscribed", text=text, ask=False)
