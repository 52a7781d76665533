"""Request and response schemas of the notifications resource."""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard
from zoneinfo import ZoneInfo, available_timezones

from apispec.ext.marshmallow.field_converter import FieldConverterMixin
from marshmallow import Schema, ValidationError, fields, post_load, validate, validates, validates_schema
from marshmallow.types import StrSequenceOrSet, UnknownOption

from actors.providers.base import reserved_data_keys
from api.rendering import LOCALE
from api.validation import Text, bounded_json, category_name, encodable, is_category, printable
from storage.models import CHANNELS, DELIVERY_STATUSES, DEVICE_KINDS, FALLBACK_KINDS, STATUSES, URGENCIES
from storage.representation import NotificationSchema, utc_column

MAX_CONTENT = 10_000
MAX_HTML = 100_000
# Push: the longest a push service keeps a notification for an offline device (FCM's and Web Push's
# common limit: 28 days), and the key by which a newer one replaces an undelivered older one.
MAX_TTL = 2_419_200
DEFAULT_TTL = 86_400
COLLAPSE_KEY = re.compile(r"\A[A-Za-z0-9_-]{1,32}\Z")
# Far enough for any real schedule, near enough that date arithmetic cannot overflow.
MAX_SCHEDULE_AHEAD = dt.timedelta(days=3660)
TEMPLATE_NAME = r"[a-z0-9_.-]{1,100}"
# A field's description that names configured limits, as ``{MAX_DATA_BYTES}`` (see document_limits).
LIMITS_DOC = "limits_description"


def document_limits(converter: FieldConverterMixin, config: Mapping[str, Any]) -> None:
    """Make an app's OpenAPI spec state the limits in ``config`` where a field's LIMITS_DOC names one."""

    def configured_limits(self: FieldConverterMixin, field: fields.Field, **_kwargs: Any) -> dict[str, str]:
        template = field.metadata.get(LIMITS_DOC)
        return {} if template is None else {"description": template.format_map(config)}

    converter.add_attribute_function(configured_limits)


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


class TimezoneField(fields.Field[ZoneInfo]):
    """An IANA timezone name, loaded as a ``ZoneInfo``; documented as the string it is sent as."""

    _name = fields.String()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metadata = {"type": "string", **self.metadata}

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> ZoneInfo:
        name = self._name.deserialize(value)
        if name not in _zones():
            raise ValidationError(f"Unknown IANA timezone: {name!r}.")
        return ZoneInfo(name)


class QuickLoad(Schema):
    """A schema whose usual input ``quick_load`` checks straight, without marshmallow's machinery.

    ``quick_load`` returns what the schema's load would, or declines (None) whatever is unusual or
    invalid, so that the schema decides it and words every error.
    """

    def quick_load(self, data: dict[str, Any]) -> dict[str, Any] | None:
        return None

    def load(
        self,
        data: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        many: bool | None = None,
        partial: bool | StrSequenceOrSet | None = None,
        unknown: UnknownOption | None = None,
    ) -> Any:
        if not many and not partial and unknown is None and type(data) is dict:
            loaded = self.quick_load(data)
            if loaded is not None:
                return loaded
        return super().load(data, many=many, partial=partial, unknown=unknown)


class NotificationRequest(Schema):
    recipient_id: fields.String = Text(required=True, validate=[validate.Length(min=1, max=255), printable])
    # Exactly one of content and template (see _content_or_template).
    content = Text(validate=validate.Length(min=1, max=MAX_CONTENT))
    template = Text(
        validate=validate.Regexp(
            f"^{TEMPLATE_NAME}$", error="Must be 1-100 characters of a-z, 0-9, _, . and -."
        ),
        metadata={"description": "render the texts from this template instead of giving `content`"},
    )
    variables = fields.Dict(
        keys=fields.String(),
        validate=bounded_json,
        metadata={
            "description": "the template's variables, a JSON object",
            LIMITS_DOC: "at most {MAX_DATA_BYTES} bytes",
        },
    )
    locale = Text(
        validate=[
            validate.Length(max=35),
            validate.Regexp(f"^{LOCALE.pattern}$", error="Must be a locale such as pl-PL."),
        ],
        metadata={
            "description": "the template's locale to render, falling back from `pl-PL` to `pl` to its default"
        },
    )
    timezone = TimezoneField(
        load_default=None,
        metadata={"description": "IANA zone; when omitted the recipient's, else the service's default"},
    )
    scheduled_time = fields.DateTime(
        load_default=None,
        metadata={"description": "ISO 8601; without an offset, a wall-clock time in `timezone`"},
    )
    category = Text(
        load_default=None,
        validate=category_name,
        metadata={"description": "1-64 characters of `[a-z0-9_.-]`, for the recipient's preferences"},
    )

    @validates("recipient_id")
    def _not_blank(self, value: str, **_kwargs: Any) -> None:
        if not value.strip():
            raise ValidationError("Must not be blank.")

    @validates("scheduled_time")
    def _not_too_far(self, value: dt.datetime | None, **_kwargs: Any) -> None:
        _check_schedule(value)

    @validates_schema
    def _content_or_template(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if "template" not in data:
            if "content" not in data:
                raise ValidationError("Missing data for required field (or give template).", "content")
            errors = {name: ["Only with template."] for name in ("variables", "locale") if name in data}
            if errors:
                raise ValidationError(errors)
            return
        if "content" in data:
            raise ValidationError("Give content or template, not both.", "content")
        # The template gives every text; the request's own would be silently dropped.
        given = [name for name in ("subject", "title", "html") if data.get(name) is not None]
        if given:
            raise ValidationError({name: ["The template gives this text."] for name in given})


def _check_schedule(value: dt.datetime | None, now: dt.datetime | None = None) -> None:
    if value is None:
        return
    if value.year < 1970:
        raise ValidationError("Must not be before 1970.")
    aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if aware - (now or dt.datetime.now(dt.UTC)) > MAX_SCHEDULE_AHEAD:
        raise ValidationError("Must be within ten years from now.")


class PushRequest(QuickLoad, NotificationRequest):
    """A push notification; its ``data`` may not use the keys FCM reserves (see reserved_data_keys)."""

    title = Text(validate=validate.Length(max=255), load_default=None)
    data = fields.Dict(
        keys=fields.String(),
        load_default=None,
        validate=bounded_json,
        metadata={
            LIMITS_DOC: "a JSON object of at most {MAX_DATA_BYTES} bytes, "
            "nested at most {MAX_DATA_DEPTH} levels"
        },
    )
    ttl = fields.Integer(
        strict=True,
        load_default=DEFAULT_TTL,
        validate=validate.Range(min=0, max=MAX_TTL),
        metadata={"description": "seconds a push service keeps it for a device that is offline"},
    )
    urgency = fields.String(load_default="normal", validate=validate.OneOf(URGENCIES))
    collapse_key = fields.String(
        load_default=None,
        validate=validate.Regexp(COLLAPSE_KEY, error="Must be 1 to 32 characters of A-Z, a-z, 0-9, - and _."),
        metadata={"description": "a newer notification with the same key replaces an undelivered older one"},
    )

    @validates("data")
    def _no_key_fcm_reserves(self, value: dict[str, Any] | None, **_kwargs: Any) -> None:
        # FCM refuses them, or they would hide ours: refused here, for every push, whatever its devices.
        reserved = reserved_data_keys(value) if value else []
        if reserved:
            raise ValidationError({key: ["Reserved by FCM; use another key."] for key in reserved})

    def quick_load(self, data: dict[str, Any]) -> dict[str, Any] | None:
        return plain_push(data)


class EmailRequest(NotificationRequest):
    recipient_id = Text(
        required=True,
        validate=[validate.Length(min=1, max=320), printable],
        metadata={"description": "An email address, or the id of a recipient whose profile has an email"},
    )
    subject = Text(validate=validate.Length(max=255), load_default=None)
    html = Text(
        validate=validate.Length(min=1, max=MAX_HTML),
        load_default=None,
        metadata={"description": "an HTML part, sent with `content` as multipart/alternative"},
    )

    @post_load
    def _fold_subject(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        # A subject is one header line: line breaks would let a client add headers of its own.
        if data.get("subject"):
            data["subject"] = " ".join(data["subject"].split())
        return data


# A request naming a template goes through the schema, which checks it against content.
_PUSH_FIELDS = frozenset(PushRequest._declared_fields) - {"template", "variables", "locale"}
_RENDERED = {"text": "content", "subject": "subject", "title": "title", "html": "html"}


def rendered_fields(channel: str, texts: dict[str, str]) -> dict[str, Any]:
    """A template's rendered texts as a request's fields, held to the same limits; ValidationError if not."""
    schema = EmailRequest if channel == "email" else PushRequest
    loaded: dict[str, Any] = {}
    errors = {}
    for field, text in texts.items():
        name = _RENDERED[field]
        if name == "html" and not text.strip():
            loaded[name] = None  # a template's HTML may render to nothing: the email is then text only
            continue
        try:
            loaded[name] = schema._declared_fields[name].deserialize(text)
        except ValidationError as exc:
            errors[name] = exc.messages
    if errors:
        raise ValidationError(errors)
    if loaded.get("subject"):
        loaded["subject"] = " ".join(loaded["subject"].split())
    return loaded


def plain_push(
    body: dict[str, Any], *, fields: frozenset[str] = _PUSH_FIELDS, now: dt.datetime | None = None
) -> dict[str, Any] | None:
    """What the schema's load of ``body`` returns, for a push request of the usual shape; else None.

    Requests spent most of their validation in marshmallow's machinery (a batch of 1,000, item
    after item). This checks the same rules straight, for values of the types JSON gives, and
    declines (None) whatever is unusual or invalid, so that the schema decides those and words
    every error. ``fields`` are the keys ``body`` may have (a batch's item has its ``channel`` too);
    ``now``, when given, is a time read before the schema's own would be: a scheduled time within ten
    years of it is within ten years of the schema's ``now`` as well.
    """
    if not body.keys() <= fields:
        return None
    recipient, content = body.get("recipient_id"), body.get("content")
    if not (_plain_text(recipient, 1, 255) and recipient.isprintable() and recipient.strip()):
        return None
    if not _plain_text(content, 1, MAX_CONTENT):
        return None
    zone = body.get("timezone")
    if zone is not None and (type(zone) is not str or zone not in _zones()):
        return None
    scheduled_time = body.get("scheduled_time")
    if scheduled_time is not None:
        if type(scheduled_time) is not str:
            return None
        try:
            scheduled_time = dt.datetime.fromisoformat(scheduled_time)  # as fields.DateTime does
            _check_schedule(scheduled_time, now)
        except (ValueError, ValidationError):
            return None
    title = body.get("title")
    if title is not None and not _plain_text(title, 0, 255):
        return None
    category = body.get("category")
    if category is not None and not (type(category) is str and is_category(category)):
        return None
    data = body.get("data")
    if data is not None:
        if type(data) is not dict or not all(type(key) is str for key in data):
            return None
        data = dict(data)
        if reserved_data_keys(data):
            return None
        try:
            bounded_json(data)
        except ValidationError:
            return None
    ttl, urgency = body.get("ttl", DEFAULT_TTL), body.get("urgency", "normal")
    collapse_key = body.get("collapse_key")
    if type(ttl) is not int or not 0 <= ttl <= MAX_TTL or urgency not in URGENCIES:
        return None
    if collapse_key is not None and (type(collapse_key) is not str or not COLLAPSE_KEY.match(collapse_key)):
        return None
    return {
        "recipient_id": recipient,
        "content": content,
        "timezone": None if zone is None else ZoneInfo(zone),
        "scheduled_time": scheduled_time,
        "title": title,
        "data": data,
        "ttl": ttl,
        "urgency": urgency,
        "collapse_key": collapse_key,
        "category": category,
    }


def _plain_text(value: object, shortest: int, longest: int) -> TypeGuard[str]:
    """A string ``Text`` accepts as it is, of a length ``validate.Length`` accepts."""
    return (
        type(value) is str
        and shortest <= len(value) <= longest
        and "\x00" not in value
        and (value.isascii() or encodable(value))
    )


class BatchItem(fields.Field[dict[str, Any]]):
    """One notification of a batch: a push or an email request, chosen by its ``channel``."""

    # Instances made once: a schema loads any number of times, and making one costs more than a load.
    schemas = {"push": PushRequest(), "email": EmailRequest()}

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ValidationError("Must be an object.")
        body = dict(value)
        channel = body.pop("channel", None)
        if not isinstance(channel, str) or channel not in self.schemas:  # a list is no dict key: 422, not 500
            raise ValidationError({"channel": ["Must be one of: push, email."]})
        return {"channel": channel, **self.schemas[channel].load(body)}


MAX_BATCH = 1000


class BatchRequest(QuickLoad):
    notifications = fields.List(
        BatchItem(metadata={"type": "object", "description": "a push or email request plus `channel`"}),
        required=True,
        validate=validate.Length(min=1, max=MAX_BATCH),
    )

    def quick_load(self, data: dict[str, Any]) -> dict[str, Any] | None:
        return plain_batch(data)


_BATCH_PUSH_FIELDS = _PUSH_FIELDS | {"channel"}


def plain_batch(body: dict[str, Any]) -> dict[str, Any] | None:
    """What BatchRequest's load of ``body`` returns, for a batch of valid items; else None.

    The list and its items are checked without marshmallow's machinery for each (a push item of the
    usual shape by plain_push, an email item by its schema, as BatchItem does), and anything unusual
    or invalid is declined (None), so that the schema decides it and words every error.
    """
    if body.keys() != {"notifications"}:
        return None
    items = body["notifications"]
    if type(items) is not list or not 1 <= len(items) <= MAX_BATCH:
        return None
    loaded = []
    email = BatchItem.schemas["email"]
    now = dt.datetime.now(dt.UTC)  # once for the batch (see plain_push)
    for item in items:
        if type(item) is not dict:
            return None
        channel = item.get("channel")
        if channel == "push":
            push = plain_push(item, fields=_BATCH_PUSH_FIELDS, now=now)
            if push is None:
                return None
            push["channel"] = "push"
            loaded.append(push)
        elif channel == "email":
            request = dict(item)
            del request["channel"]
            try:
                loaded.append({"channel": "email", **email.load(request)})
            except ValidationError:
                return None
        else:
            return None
    return {"notifications": loaded}


class BatchResponse(Schema):
    status = fields.String()
    count = fields.Integer()
    notification_ids = fields.List(fields.UUID())
    message = fields.String()


class AcceptedResponse(Schema):
    status = fields.String()
    notification_id = fields.UUID()
    message = fields.String()


class ActionResponse(AcceptedResponse):
    task_id = fields.String(allow_none=True, metadata={"description": "id of the Dramatiq message"})


class DeliverySchema(Schema):
    device_id = fields.UUID(allow_none=True, metadata={"description": "null for the webhook or the outbox"})
    kind = fields.String(metadata={"enum": [*DEVICE_KINDS, *FALLBACK_KINDS]})
    status = fields.String(
        metadata={"enum": list(DELIVERY_STATUSES), "description": "pending: not tried yet, or to be retried"}
    )
    attempts = fields.Integer()
    provider_message_id = fields.String(allow_none=True)
    error = fields.String(allow_none=True)
    delivered_at = utc_column("delivered_at", nullable=True)


class NotificationDetail(NotificationSchema):
    deliveries = fields.List(
        fields.Nested(DeliverySchema),
        metadata={"description": "push: one per device of the recipient, or one to the webhook or outbox"},
    )


class NotificationList(Schema):
    count = fields.Integer(metadata={"description": "how many notifications match the filters"})
    notifications = fields.List(fields.Nested(NotificationSchema))


class ListArgs(Schema):
    status = fields.String(metadata={"enum": list(STATUSES), "description": "case-insensitive"})
    channel = fields.String(validate=validate.OneOf(CHANNELS))
    recipient_id = Text(validate=validate.Length(max=320))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=10_000_000))

    @post_load
    def _normalise_status(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        if "status" in data:
            by_lower = {s.lower(): s for s in STATUSES}
            status = by_lower.get(data["status"].lower())
            if status is None:
                raise ValidationError({"status": [f"Must be one of: {', '.join(STATUSES)}."]})
            data["status"] = status
        return data
