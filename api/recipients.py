"""The recipients resource: a profile per recipient (address, timezone, locale, window, preferences)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint, abort
from marshmallow import Schema, ValidationError, fields, validate, validates

from api import usecases
from api.schemas import TimezoneField
from api.validation import JsonParser, Text, category_name, printable
from storage import devices, recipients
from storage.models import CHANNELS, Recipient
from storage.representation import utc_column

blp = Blueprint("recipients", __name__, url_prefix="/recipients", description="Recipients' profiles")
blp.ARGUMENTS_PARSER = JsonParser()

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# BCP 47 as people write it: a language, then optional script, region, variants and extensions.
_LOCALE = re.compile(
    r"[A-Za-z]{2,8}(-[A-Za-z]{4})?(-([A-Za-z]{2}|[0-9]{3}))?(-([A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*"
    r"(-[0-9A-WY-Za-wy-z](-[A-Za-z0-9]{2,8})+)*(-x(-[A-Za-z0-9]{1,8})+)?"
)
_HH_MM = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")


def _locale(value: str) -> None:
    if len(value) > 64 or not _LOCALE.fullmatch(value):
        raise ValidationError("Must be a BCP 47 language tag, such as 'pl-PL'.")


def _hh_mm(value: str) -> None:
    if not _HH_MM.fullmatch(value):
        raise ValidationError("Must be a time as HH:MM, from 00:00 to 23:59.")


class DeliveryWindow(Schema):
    start = fields.String(required=True, validate=_hh_mm, metadata={"example": "09:00"})
    end = fields.String(
        required=True,
        validate=_hh_mm,
        metadata={"description": "exclusive; before `start` the window spans midnight, equal it is all day"},
    )
    days = fields.List(
        fields.String(validate=validate.OneOf(DAYS)),
        validate=validate.Length(min=1, max=7),
        metadata={"description": "the days it opens on; all seven when omitted"},
    )

    @validates("days")
    def _distinct(self, value: list[str], **_kwargs: Any) -> None:
        if len(set(value)) != len(value):
            raise ValidationError("Must not list a day twice.")


class Switch(fields.Boolean):
    """JSON's true or false, nothing else ("no" and 0 are not a preference)."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kw: Any) -> bool:
        if type(value) is not bool:
            raise ValidationError("Must be true or false.")
        return value


def _switches() -> fields.Dict:
    channel = fields.String(validate=validate.OneOf(CHANNELS))
    return fields.Dict(keys=channel, values=Switch())


class Preferences(Schema):
    channels = _switches()
    categories = fields.Dict(
        keys=fields.String(validate=category_name), values=_switches(), validate=validate.Length(max=1000)
    )


class Profile(Schema):
    """What a client sets; every field optional, ``null`` clears it."""

    email = fields.Email(allow_none=True, validate=validate.Length(min=3, max=254))
    timezone = TimezoneField(allow_none=True)
    locale = fields.String(allow_none=True, validate=_locale)
    delivery_window = fields.Nested(DeliveryWindow, allow_none=True)
    preferences = fields.Nested(Preferences, allow_none=True)


class RecipientSchema(Schema):
    id = fields.String()
    email = fields.String(allow_none=True)
    timezone = fields.String(allow_none=True)
    locale = fields.String(allow_none=True)
    delivery_window = fields.Dict(allow_none=True)
    preferences = fields.Dict(allow_none=True)
    created_at = utc_column("created_at")
    updated_at = utc_column("updated_at")
    devices = fields.Method("_devices", metadata={"description": "how many devices it has registered"})

    def _devices(self, recipient: Recipient) -> int:
        return devices.count_of(recipient.id)


class RecipientList(Schema):
    count = fields.Integer()
    recipients = fields.List(fields.Nested(RecipientSchema))


class ListArgs(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=10_000_000))


_recipient_id = Text(validate=[validate.Length(min=1, max=320), printable])


def _checked_id(recipient_id: str) -> str:
    """The path's recipient id, or a 422 naming ``recipient_id``."""
    try:
        _recipient_id.deserialize(recipient_id)
    except ValidationError as exc:
        abort(422, errors={"path": {"recipient_id": exc.messages}})
    if not recipient_id.strip():
        abort(422, errors={"path": {"recipient_id": ["Must not be blank."]}})
    return recipient_id


def _stored(profile: Mapping[str, Any]) -> dict[str, Any]:
    """A loaded profile as it is stored: the zone by its name."""
    stored = dict(profile)
    if stored.get("timezone") is not None:
        stored["timezone"] = stored["timezone"].key
    return stored


@blp.route("")
class Recipients(MethodView):
    @blp.arguments(ListArgs(), location="query")
    @blp.response(200, RecipientList)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List recipients, newest first"""
        query = recipients.listing()
        return {"count": query.count(), "recipients": list(query.limit(args["limit"]).offset(args["offset"]))}


@blp.route("/<recipient_id>")
class RecipientById(MethodView):
    @blp.response(200, RecipientSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, recipient_id: str) -> Recipient:
        """Get a recipient's profile"""
        try:
            return recipients.get(_checked_id(recipient_id))
        except recipients.RecipientNotFound:
            abort(404, message=f"Recipient {recipient_id!r} not found.")
        raise AssertionError("unreachable: abort raises")

    @blp.arguments(Profile())
    @blp.response(200, RecipientSchema)
    @blp.alt_response(201, schema=RecipientSchema, description="Created")
    def put(self, profile: dict[str, Any], recipient_id: str) -> tuple[Recipient, int]:
        """Create or replace a recipient's profile"""
        recipient, created = usecases.replace_recipient(_checked_id(recipient_id), _stored(profile))
        return recipient, 201 if created else 200

    @blp.response(204)
    def delete(self, recipient_id: str) -> None:
        """Erase a recipient: its profile, and its notifications' recipient and text"""
        usecases.erase_recipient(_checked_id(recipient_id))

    @blp.arguments(Profile())
    @blp.response(200, RecipientSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def patch(self, changes: dict[str, Any], recipient_id: str) -> Recipient:
        """Change the profile's fields the body names, each replaced whole"""
        try:
            return usecases.update_recipient(_checked_id(recipient_id), _stored(changes))
        except recipients.RecipientNotFound:
            abort(404, message=f"Recipient {recipient_id!r} not found.")
        raise AssertionError("unreachable: abort raises")
