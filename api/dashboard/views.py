"""The dashboard's pages: the overview, a queue's notifications, one notification, one recipient."""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from uuid import UUID

import peewee
import pika.exceptions
from flask import abort, current_app, render_template, request

import actors
from actors import queues
from api.dashboard import charts
from api.dashboard.blueprint import blp
from storage import deliveries, devices, metrics, queries, recipients, status_events, workers
from storage.clock import utcnow
from storage.models import CHANNELS, FAILED, PENDING, PROCESSING

logger = logging.getLogger(__name__)

TABS = {"scheduled": PENDING, "processing": PROCESSING, "failed": FAILED}
PAGE_SIZE = 25
TIMELINE_HOURS = 24


def _broker_stats() -> tuple[list[queues.QueueStats], str | None]:
    try:
        return queues.stats(actors.broker, list(CHANNELS)), None
    except (pika.exceptions.AMQPError, OSError) as exc:
        logger.warning("Broker unavailable to the dashboard: %s", exc)
        return [queues.QueueStats(c, None, None, None, None) for c in CHANNELS], str(exc) or repr(exc)


def _timeline(now: dt.datetime) -> list[charts.Chart]:
    first = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=TIMELINE_HOURS - 1)
    hours = [first + dt.timedelta(hours=i) for i in range(TIMELINE_HOURS)]
    counts: dict[str, dict[tuple[dt.datetime, str], int]] = defaultdict(dict)
    for hour, channel, status, count in metrics.timeline(first):
        counts[channel][(hour, metrics.STATUS_NAMES[status])] = count
    return [charts.stacked_hours(channel, counts[channel], hours) for channel in CHANNELS]


@blp.context_processor
def _now() -> dict[str, dt.datetime]:
    return {"now": utcnow()}


@blp.get("/")
def overview() -> str:
    now = utcnow()
    stats, broker_error = _broker_stats()
    return render_template(
        "dashboard/overview.html",
        queues=stats,
        broker_error=broker_error,
        broker_kind="redis" if actors.REDIS else "embedded" if actors.EMBEDDED else "rabbitmq",
        outlook=metrics.schedule_outlook(now),
        workers=workers.hosts(),
        stale_after=dt.timedelta(seconds=3 * current_app.config["WORKER_HEARTBEAT_INTERVAL"]),
        charts=_timeline(now),
        statuses=charts.STATUS_ORDER,
    )


@blp.get("/queues/<any(push, email):channel>")
def queue(channel: str) -> str:
    tab = request.args.get("tab", "scheduled")
    page_number = request.args.get("page", 1, type=int)
    stats, broker_error = _broker_stats()
    page = dead = None
    if tab == "dead":
        try:
            dead = queues.dead_letters(actors.broker, channel)
        except (pika.exceptions.AMQPError, OSError) as exc:
            broker_error = str(exc) or repr(exc)
    elif tab in TABS:
        page = queries.page(channel, TABS[tab], page_number, PAGE_SIZE)
    else:
        abort(404)
    return render_template(
        "dashboard/queue.html",
        channel=channel,
        tab=tab,
        tabs=[*TABS, "dead"],
        stats=next(s for s in stats if s.name == channel),
        broker_error=broker_error,
        page=page,
        dead=dead,
    )


@blp.get("/notifications/<uuid:notification_id>")
def notification(notification_id: UUID) -> str:
    try:
        found = queries.get(notification_id)
    except queries.NotificationNotFound:
        abort(404, description=f"Notification {notification_id} not found.")
    return render_template(
        "dashboard/notification.html",
        n=found,
        history=list(queries.history(notification_id)),
        deliveries=deliveries.of_notification(notification_id),
    )


@blp.get("/recipients/<path:recipient_id>")
def recipient(recipient_id: str) -> str:
    return render_template(
        "dashboard/recipient.html",
        recipient_id=recipient_id,
        profile=recipients.find(recipient_id),
        channels=CHANNELS,
        devices=devices.of_recipient(recipient_id),
        recent=list(queries.listing(recipient_id=recipient_id).limit(PAGE_SIZE)),
    )


@blp.get("/webhooks")
def status_webhooks() -> str:
    return render_template("dashboard/webhooks.html", events=status_events.failed())


@blp.errorhandler(peewee.OperationalError)
def _database_unavailable(exc: Exception) -> tuple[str, int]:
    logger.error("Database unavailable to the dashboard: %s", exc)
    return render_template("dashboard/error.html", message="The database is unavailable."), 503


@blp.app_template_filter("relative")
def relative(moment: dt.datetime | None, now: dt.datetime) -> str:
    """'in 5 min', '3 h ago': a stored UTC time against ``now``."""
    if moment is None:
        return "—"
    seconds = (moment - now).total_seconds()
    size = abs(seconds)
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if size >= length:
            amount = f"{int(size // length)} {unit}"
            break
    else:
        amount = f"{int(size)} s"
    return f"in {amount}" if seconds > 0 else f"{amount} ago"
