"""The devices resource: a recipient's browsers and phones, registered, listed and removed."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric import ec
from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from actors.providers import endpoints, missing_settings
from api.validation import JsonParser, Text
from storage import devices
from storage.models import DEVICE_KINDS, Device
from storage.representation import DeviceSchema

blp = Blueprint("devices", __name__, description="Recipients' devices, which push notifications go to")
blp.ARGUMENTS_PARSER = JsonParser()

WEB_PUSH_KINDS = ("webpush", "unifiedpush")
APNS_ENVIRONMENTS = ("production", "sandbox")
MAX_ENDPOINT = 2048
MAX_FCM_TOKEN = 4096
_BASE64URL = re.compile(r"\A[A-Za-z0-9_-]+={0,2}\Z")
_APNS_TOKEN = re.compile(r"\A[0-9A-Fa-f]{64,200}\Z")


def _base64url(value: str) -> bytes:
    """The bytes of base64url text, padded or not; ``ValidationError`` when it is not base64url."""
    if not _BASE64URL.match(value):
        raise ValidationError("Must be base64url.")
    unpadded = value.rstrip("=")
    try:
        return base64.urlsafe_b64decode(unpadded + "=" * (-len(unpadded) % 4))
    except (binascii.Error, ValueError):
        raise ValidationError("Must be base64url.") from None


class SubscriptionKeys(Schema):
    p256dh = fields.String(
        required=True, metadata={"description": "base64url of the uncompressed P-256 point (65 bytes)"}
    )
    auth = fields.String(required=True, metadata={"description": "base64url of 16 bytes"})

    @validates("p256dh")
    def _on_p256(self, value: str, **_kwargs: Any) -> None:
        raw = _base64url(value)
        if len(raw) != 65 or raw[0] != 0x04:
            raise ValidationError("Must be an uncompressed P-256 point: 65 bytes, the first 0x04.")
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
        except ValueError:
            raise ValidationError("Must be a point on the P-256 curve.") from None

    @validates("auth")
    def _sixteen_bytes(self, value: str, **_kwargs: Any) -> None:
        if len(_base64url(value)) != 16:
            raise ValidationError("Must be 16 bytes.")


class Subscription(Schema):
    """What a browser's ``PushSubscription.toJSON()`` gives."""

    endpoint = Text(required=True, validate=validate.Length(min=1, max=MAX_ENDPOINT))
    expirationTime = fields.Float(allow_none=True, load_default=None)  # the browser's name
    keys = fields.Nested(SubscriptionKeys, required=True)

    @validates("endpoint")
    def _reachable_safely(self, value: str, **_kwargs: Any) -> None:
        # Clients choose the URL the workers will POST to: public addresses only, unless allow-listed.
        try:
            endpoints.check(value, current_app.config["PUSH_ENDPOINT_ALLOWLIST"])
        except endpoints.UnsafeEndpoint as exc:
            raise ValidationError(str(exc)) from None


class DeviceRequest(Schema):
    kind = fields.String(
        required=True,
        validate=validate.OneOf(DEVICE_KINDS),
        metadata={"description": "a kind whose credentials are not configured is refused"},
    )
    subscription = fields.Nested(Subscription, metadata={"description": "webpush and unifiedpush"})
    token = Text(metadata={"description": "fcm: the registration token; apns: the device token, hex"})
    environment = fields.String(
        validate=validate.OneOf(APNS_ENVIRONMENTS), metadata={"description": "apns only; default production"}
    )
    label = Text(
        load_default=None,
        validate=validate.Length(max=100),
        metadata={"description": "e.g. Firefox on laptop"},
    )

    @validates("kind")
    def _configured(self, value: str, **_kwargs: Any) -> None:
        missing = missing_settings(value) if value in DEVICE_KINDS else []
        if missing:
            raise ValidationError(f"{value} devices cannot be sent to: {', '.join(missing)} not set.")

    @validates_schema(skip_on_field_errors=False, pass_original=True)
    def _fits_kind(self, data: dict[str, Any], original: Any, **_kwargs: Any) -> None:
        kind = data.get("kind")
        if kind not in DEVICE_KINDS or not isinstance(original, dict):
            return  # the kind's own error says it
        needed = "subscription" if kind in WEB_PUSH_KINDS else "token"
        allowed = {needed, "environment"} if kind == "apns" else {needed}
        # Presence is read from the request: a field its own validation refused is not in ``data``.
        errors: dict[str, list[str]] = {
            name: [f"Not taken by kind {kind}."]
            for name in ("subscription", "token", "environment")
            if name in original and name not in allowed
        }
        if needed not in original:
            errors[needed] = [f"Missing data for required field (kind {kind})."]
        token = data.get("token")
        if kind == "fcm" and isinstance(token, str):
            problem = _fcm_token_problem(token)
            if problem:
                errors["token"] = [problem]
        if kind == "apns" and isinstance(token, str) and not _APNS_TOKEN.match(token):
            errors["token"] = ["Must be 64 to 200 hexadecimal digits."]
        if errors:
            raise ValidationError(errors)


def _fcm_token_problem(token: str) -> str | None:
    if not token:
        return "Must not be empty."
    if len(token) > MAX_FCM_TOKEN:
        return f"Must be at most {MAX_FCM_TOKEN} characters."
    if any(c.isspace() for c in token):
        return "Must not contain whitespace."
    return None


class DeviceList(Schema):
    count = fields.Integer()
    devices = fields.List(fields.Nested(DeviceSchema))


class WebPushKey(Schema):
    public_key = fields.String(
        metadata={
            "description": "base64url of the uncompressed P-256 point: pushManager.subscribe()'s "
            "applicationServerKey"
        }
    )


def _recipient(recipient_id: str) -> str:
    """The path's recipient id, held to the rules of a push notification's ``recipient_id``."""
    if not 1 <= len(recipient_id) <= 255 or not recipient_id.isprintable() or not recipient_id.strip():
        abort(422, errors={"path": {"recipient_id": ["Must be 1 to 255 printable characters, not blank."]}})
    return recipient_id


def _stored(fields: dict[str, Any]) -> dict[str, Any]:
    """What storage keeps of a validated request."""
    kind = fields["kind"]
    stored: dict[str, Any] = {"kind": kind, "label": fields["label"]}
    if kind in WEB_PUSH_KINDS:
        subscription = fields["subscription"]
        stored |= {
            "address": subscription["endpoint"],
            "p256dh": subscription["keys"]["p256dh"].rstrip("="),
            "auth": subscription["keys"]["auth"].rstrip("="),
        }
    elif kind == "apns":
        # Hex, whatever its case: one device, one address.
        stored |= {"address": fields["token"].lower(), "environment": fields.get("environment", "production")}
    else:
        stored["address"] = fields["token"]
    return stored


@blp.route("/recipients/<path:recipient_id>/devices")
class RecipientDevices(MethodView):
    @blp.arguments(DeviceRequest())
    @blp.response(201, DeviceSchema)
    @blp.alt_response(200, schema=DeviceSchema, description="Registered already; active again")
    def post(self, fields: dict[str, Any], recipient_id: str) -> tuple[Device, int]:
        """Register a device of the recipient"""
        device, created = devices.register(_recipient(recipient_id), **_stored(fields))
        return device, 201 if created else 200

    @blp.response(200, DeviceList)
    def get(self, recipient_id: str) -> dict[str, Any]:
        """List the recipient's devices, active and disabled"""
        found = devices.of_recipient(_recipient(recipient_id))
        return {"count": len(found), "devices": found}


@blp.route("/recipients/<path:recipient_id>/devices/<uuid:device_id>")
class RecipientDevice(MethodView):
    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    def delete(self, recipient_id: str, device_id: UUID) -> None:
        """Remove one of the recipient's devices"""
        try:
            devices.delete(_recipient(recipient_id), device_id)
        except devices.DeviceNotFound:
            abort(404, message=f"Recipient {recipient_id} has no device {device_id}.")


@blp.route("/push/webpush-key")
class WebPushKeyView(MethodView):
    @blp.response(200, WebPushKey)
    def get(self) -> dict[str, str]:
        """The VAPID public key browsers subscribe with"""
        # Imported when first asked for, as sender_for imports the senders: the Web Push sender's
        # libraries cost a web process 12 MB that only this answer needs.
        from actors.providers.webpush import vapid_public_key

        return {"public_key": vapid_public_key()}
