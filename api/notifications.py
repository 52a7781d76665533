"""The notifications resource: schedule, read, list, force and cancel."""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint, abort

import logs
import settings
from actors import scheduler
from api import prometheus
from api.delivery_time import plan_delivery
from api.idempotency import idempotent
from api.schemas import (
    AcceptedResponse,
    ActionResponse,
    BatchRequest,
    BatchResponse,
    EmailRequest,
    ListArgs,
    NotificationList,
    NotificationSchema,
    PushRequest,
)
from api.validation import JsonParser
from storage import ingest, queries, transitions
from storage.clock import to_db

logger = logging.getLogger(__name__)

blp = Blueprint(
    "notifications", __name__, url_prefix="/notifications", description="Push and email notifications"
)
blp.ARGUMENTS_PARSER = JsonParser()
# Argument schemas are given as instances: given a class, webargs makes a new schema per request,
# which costs more than the load itself.


def _row(channel: str, fields: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """The stored form of a validated request: its time resolved into a due time."""
    fields = dict(fields)
    zone = fields.pop("timezone")
    plan = plan_delivery(
        fields.pop("scheduled_time"),
        zone,
        now=now,
        start=settings.APPROPRIATE_HOURS_START,
        end=settings.APPROPRIATE_HOURS_END,
    )
    return {
        **fields,
        "channel": channel,
        "timezone": zone.key,
        "scheduled_time": to_db(plan.scheduled_time),
        "appropriate_delivery": plan.appropriate_delivery,
        "due_at": to_db(plan.due_at),
    }


def _accepted(rows: list[dict[str, Any]]) -> None:
    """What follows storing accepted rows: wake the schedulers if any falls due soon, count them."""
    scheduler.wake(row["due_at"] for row in rows)
    for channel, count in Counter(row["channel"] for row in rows).items():
        prometheus.ACCEPTED_BY_CHANNEL[channel].inc(count)


def _accept(channel: str, fields: dict[str, Any]) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    row = _row(channel, fields, now)
    notification_id = ingest.create(host=settings.HOSTNAME, **row)
    _accepted([row])
    with logs.context(notification_id, channel):
        logger.info("Accepted, due %s", row["due_at"].isoformat())
    return {
        "status": "success",
        "notification_id": notification_id,
        "message": f"{channel.capitalize()} notification scheduled",
    }


def _found(action, notification_id, **kwargs):
    """Run a storage transition, translating its domain errors to HTTP once."""
    try:
        return action(notification_id, **kwargs)
    except queries.NotificationNotFound:
        abort(404, message=f"Notification {notification_id} not found.")
    except transitions.TransitionConflict as exc:
        abort(409, message=str(exc))


@blp.route("/push")
class PushNotifications(MethodView):
    @idempotent(blp)
    @blp.arguments(PushRequest())
    @blp.response(202, AcceptedResponse)
    @blp.alt_response(413, response="REQUEST_ENTITY_TOO_LARGE")
    def post(self, fields):
        """Schedule a push notification"""
        return _accept("push", fields)


@blp.route("/email")
class EmailNotifications(MethodView):
    @idempotent(blp)
    @blp.arguments(EmailRequest())
    @blp.response(202, AcceptedResponse)
    @blp.alt_response(413, response="REQUEST_ENTITY_TOO_LARGE")
    def post(self, fields):
        """Schedule an email notification"""
        return _accept("email", fields)


@blp.route("/batch")
class NotificationBatch(MethodView):
    @idempotent(blp)
    @blp.arguments(BatchRequest())
    @blp.response(202, BatchResponse)
    @blp.alt_response(413, response="REQUEST_ENTITY_TOO_LARGE")
    def post(self, batch):
        """Schedule up to 1000 notifications at once, all or none"""
        now = dt.datetime.now(dt.UTC)
        rows = [_row(item.pop("channel"), item, now) for item in batch["notifications"]]
        ids = ingest.create_many(rows, host=settings.HOSTNAME)
        _accepted(rows)
        logger.info("Accepted a batch of %d", len(ids))
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
    def get(self, args):
        """List notifications, newest first"""
        limit, offset = args.pop("limit"), args.pop("offset")
        query = queries.listing(**args)
        return {"count": query.count(), "notifications": list(query.limit(limit).offset(offset))}


@blp.route("/<uuid:notification_id>")
class NotificationById(MethodView):
    @blp.response(200, NotificationSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, notification_id):
        """Get one notification and its status"""
        return _found(queries.get, notification_id)


@blp.route("/<uuid:notification_id>/force")
class ForceNotification(MethodView):
    @idempotent(blp)
    @blp.response(200, ActionResponse)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def post(self, notification_id):
        """Deliver now, ignoring schedule and appropriate hours"""
        notification = _found(
            transitions.force, notification_id, host=settings.HOSTNAME, lease=settings.DISPATCH_LEASE
        )
        task_id = scheduler.publish_now(notification)
        return {
            "status": "success",
            "message": "Notification delivery forced",
            "notification_id": notification_id,
            "task_id": task_id,
        }


@blp.route("/<uuid:notification_id>/cancel")
class CancelNotification(MethodView):
    @idempotent(blp)
    @blp.response(200, ActionResponse)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def post(self, notification_id):
        """Cancel a notification before delivery"""
        notification = _found(transitions.cancel, notification_id, host=settings.HOSTNAME)
        # The message already queued for it, if any: it will now do nothing when it comes.
        published = notification.message_seq > 0
        return {
            "status": "success",
            "message": "Notification cancelled",
            "notification_id": notification_id,
            "task_id": scheduler.message_id_for(notification_id, notification.message_seq)
            if published
            else None,
        }
