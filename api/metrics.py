"""Counts of recent notifications by host, channel and status, as JSON."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from storage import metrics
from storage.clock import utcnow

blp = Blueprint("metrics", __name__, url_prefix="/metrics", description="Operational metrics")

MAX_PERIOD = 366 * 24 * 3600


class MetricsArgs(Schema):
    period = fields.Integer(
        load_default=3600,
        validate=validate.Range(min=1, max=MAX_PERIOD),
        metadata={"description": "seconds back from now; a notification counts if it changed within them"},
    )


class ChannelCounts(Schema):
    total = fields.Integer()
    statuses = fields.Dict(
        keys=fields.String(validate=validate.OneOf(list(metrics.STATUS_NAMES.values()))),
        values=fields.Integer(),
        metadata={"example": dict.fromkeys(metrics.STATUS_NAMES.values(), 0)},
    )


class ServerCounts(Schema):
    channels = fields.Dict(keys=fields.String(), values=fields.Nested(ChannelCounts))
    total = fields.Integer()


class MetricsSchema(Schema):
    timestamp = fields.DateTime()
    period = fields.Integer()
    servers = fields.Dict(
        keys=fields.String(),
        values=fields.Nested(ServerCounts),
        metadata={
            "description": "by the worker host that handled them, else the API host that accepted them"
        },
    )
    total = fields.Integer()


@blp.route("")
class Metrics(MethodView):
    @blp.arguments(MetricsArgs(), location="query")
    @blp.response(200, MetricsSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Notifications active in the last period, by host, channel and status"""
        now = utcnow()
        counts = metrics.activity(now - dt.timedelta(seconds=args["period"]))
        return {"timestamp": now.replace(tzinfo=dt.UTC), "period": args["period"], **counts}
