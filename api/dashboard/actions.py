"""The dashboard's actions: retry or cancel a notification, handle dead letters, send a status event again."""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import urlencode, urlsplit
from uuid import UUID

import pika.exceptions
from flask import redirect, request, url_for
from werkzeug.wrappers import Response

import logs
from actors import broker, queues
from api import usecases
from api.dashboard.blueprint import blp
from storage import queries, status_events, transitions

logger = logging.getLogger(__name__)


def _back(notice: str, fallback: str) -> Response:
    """Redirect to the page the form was on (never off the dashboard), saying what happened."""
    target = request.form.get("next", "")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(f"{blp.url_prefix}/"):
        target = fallback
    separator = "&" if "?" in target else "?"
    return redirect(f"{target}{separator}{urlencode({'notice': notice})}", code=303)


def _attempt(
    use_case: Callable[[UUID], usecases.Outcome], notification_id: UUID
) -> tuple[usecases.Outcome | None, str]:
    """Run a use case on one notification: its outcome, or None and what stood in the way."""
    try:
        return use_case(notification_id), ""
    except queries.NotificationNotFound:
        return None, f"Notification {notification_id} not found."
    except transitions.TransitionConflict as exc:
        return None, str(exc)


@blp.post("/notifications/<uuid:notification_id>/retry")
def retry(notification_id: UUID) -> Response:
    fallback = url_for("dashboard.notification", notification_id=notification_id)
    forced, problem = _attempt(usecases.force, notification_id)
    if forced is None:
        return _back(problem, fallback)
    with logs.context(str(notification_id), forced.notification.channel):
        logger.info("Retry requested from the dashboard")
    return _back(f"Notification {notification_id} will be retried now.", fallback)


@blp.post("/notifications/<uuid:notification_id>/cancel")
def cancel(notification_id: UUID) -> Response:
    fallback = url_for("dashboard.notification", notification_id=notification_id)
    cancelled, problem = _attempt(usecases.cancel, notification_id)
    if cancelled is None:
        return _back(problem, fallback)
    with logs.context(str(notification_id), cancelled.notification.channel):
        logger.info("Cancelled from the dashboard")
    return _back(f"Notification {notification_id} cancelled.", fallback)


@blp.post("/queues/<any(push, email):channel>/dead/<any(requeue, drop):action>")
def dead_letters(channel: str, action: str) -> Response:
    message_id = request.form.get("message_id") or None
    fallback = url_for("dashboard.queue", channel=channel, tab="dead")
    handle = queues.requeue_dead if action == "requeue" else queues.drop_dead
    try:
        count = handle(broker, channel, message_id)
    except (pika.exceptions.AMQPError, OSError) as exc:
        return _back(f"The broker is unavailable: {exc or repr(exc)}", fallback)
    verb = "requeued" if action == "requeue" else "dropped"
    logger.info("%s %d dead-lettered messages of %s from the dashboard", verb.capitalize(), count, channel)
    return _back(f"{count} dead-lettered message{'s' if count != 1 else ''} {verb}.", fallback)


@blp.post("/webhooks/<int:event_id>/send-again")
def send_status_event_again(event_id: int) -> Response:
    fallback = url_for("dashboard.status_webhooks")
    if not status_events.send_again(event_id):
        return _back(f"Status event {event_id} is not a failed one.", fallback)
    logger.info("Status event %d to be sent again, from the dashboard", event_id)
    return _back(f"Status event {event_id} will be sent again.", fallback)
