"""The dashboard's blueprint, on which its page, action and anti-forgery modules register."""

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
