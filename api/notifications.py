"""The notifications resource: schedule, read, list, force and cancel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn, TypeVar
from uuid import UUID

from flask.views import MethodView
from flask_smorest import Blueprint, abort

from api import rendering, usecases
from api.idempotency import idempotent, request_key
from api.schemas import (
    AcceptedResponse,
    ActionResponse,
    BatchRequest,
    BatchResponse,
    EmailRequest,
    ListArgs,
    NotificationDetail,
    NotificationList,
    PushRequest,
)
from api.validation import JsonParser
from storage import deliveries, queries, transitions
from storage.models import Notification

blp = Blueprint(
    "notifications", __name__, url_prefix="/notifications", description="Push and email notifications"
)
blp.ARGUMENTS_PARSER = JsonParser()
# Argument schemas are given as instances: given a class, webargs makes a new schema per request,
# which costs more than the load itself.

Result = TypeVar("Result")


def _answer(use_case: Callable[[UUID], Result], notification_id: UUID) -> Result:
    """Run a use case on one notification, translating its domain errors to HTTP once."""
    try:
        return use_case(notification_id)
    except queries.NotificationNotFound:
        abort(404, message=f"Notification {notification_id} not found.")
    except transitions.TransitionConflict as exc:
        abort(409, message=str(exc))
    raise AssertionError("unreachable: abort raises")


def _unrenderable(exc: rendering.RenderError) -> NoReturn:
    """A template that does not render for the request: a 422 naming the field (and the batch's item)."""
    errors: dict[str, Any] = {exc.field: [exc.message]}
    abort(422, errors={"json": errors if exc.item is None else {"notifications": {str(exc.item): errors}}})
    raise AssertionError("unreachable: abort raises")


def _accepted(use_case: Callable[..., Result], *args: Any) -> Result:
    """Run an accepting use case, translating what makes the request unusable to a 422 naming the field."""
    try:
        return use_case(*args, request_key())
    except rendering.RenderError as exc:
        _unrenderable(exc)
    except usecases.Rejected as exc:
        abort(422, errors={"json": exc.errors})
    raise AssertionError("unreachable: abort raises")


def _scheduled(channel: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": "success",
        "notification_id": _accepted(usecases.accept, channel, fields),
        "message": f"{channel.capitalize()} notification scheduled",
    }


@blp.route("/push")
class PushNotifications(MethodView):
    @idempotent(blp)
    @blp.arguments(PushRequest())
    @blp.response(202, AcceptedResponse)
    @blp.alt_response(413, response="REQUEST_ENTITY_TOO_LARGE")
    def post(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Schedule a push notification"""
        return _scheduled("push", fields)


@blp.route("/email")
class EmailNotifications(MethodView):
    @idempotent(blp)
    @blp.arguments(EmailRequest())
    @blp.response(202, AcceptedResponse)
    @blp.alt_response(413, response="REQUEST_ENTITY_TOO_LARGE")
    def post(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Schedule an email notification"""
        return _scheduled("email", fields)


@blp.route("/batch")
class NotificationBatch(MethodView):
    @idempotent(blp)
    @blp.arguments(BatchRequest())
    @blp.response(202, BatchResponse)
    @blp.alt_response(413, response="REQUEST_ENTITY_TOO_LARGE")
    def post(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Schedule up to 1000 notifications at once, all or none"""
        ids = _accepted(usecases.accept_batch, batch["notifications"])
        return {
            "status": "success",
            "count": len(ids),
            "notification_ids": ids,
            "message": f"{len(ids)} notifications scheduled",
        }


@blp.route("")
class Notifications(MethodView):
    @blp.arguments(ListArgs(), location="query")
    @blp.response(200, NotificationList)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List notifications, newest first"""
        limit, offset = args.pop("limit"), args.pop("offset")
        query = queries.listing(**args)
        return {"count": query.count(), "notifications": list(query.limit(limit).offset(offset))}


@blp.route("/<uuid:notification_id>")
class NotificationById(MethodView):
    @blp.response(200, NotificationDetail)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, notification_id: UUID) -> Notification:
        """Get one notification and its status"""
        notification = _answer(queries.get, notification_id)
        notification.deliveries = deliveries.of_notification(notification_id)  # type: ignore[attr-defined]
        return notification


@blp.route("/<uuid:notification_id>/force")
class ForceNotification(MethodView):
    @idempotent(blp)
    @blp.response(200, ActionResponse)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def post(self, notification_id: UUID) -> dict[str, Any]:
        """Deliver now, ignoring schedule and appropriate hours"""
        forced = _answer(usecases.force, notification_id)
        return {
            "status": "success",
            "message": "Notification delivery forced",
            "notification_id": notification_id,
            "task_id": forced.message_id,
        }


@blp.route("/<uuid:notification_id>/cancel")
class CancelNotification(MethodView):
    @idempotent(blp)
    @blp.response(200, ActionResponse)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def post(self, notification_id: UUID) -> dict[str, Any]:
        """Cancel a notification before delivery"""
        cancelled = _answer(usecases.cancel, notification_id)
        return {
            "status": "success",
            "message": "Notification cancelled",
            "notification_id": notification_id,
            "task_id": cancelled.message_id,
        }
