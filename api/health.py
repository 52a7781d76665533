"""Liveness of the service and of what it depends on."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

import actors
import storage

logger = logging.getLogger(__name__)

blp = Blueprint("health", __name__, url_prefix="/health", description="Service health")


class HealthSchema(Schema):
    status = fields.String(metadata={"enum": ["ok", "unavailable"]})
    database = fields.String()
    broker = fields.String()


def _check(name: str, probe: Callable[[], object]) -> str:
    try:
        probe()
    except Exception as exc:  # any failure to answer means unavailable, whatever its type
        logger.warning("Health check: %s unreachable: %s", name, exc)
        return "unreachable"
    return "ok"


@blp.route("")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="The database or the broker is unreachable")
    def get(self) -> tuple[dict[str, str], int]:
        """State of the database and the broker"""
        result = {"database": _check("database", storage.ping), "broker": _check("broker", actors.ping)}
        healthy = all(v == "ok" for v in result.values())
        result["status"] = "ok" if healthy else "unavailable"
        return result, 200 if healthy else 503
