"""The templates resource: put, read, list and delete templates by name."""

from __future__ import annotations

import re
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint, abort
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from api import rendering
from api.validation import JsonParser, Text
from storage import templates
from storage.models import CHANNELS, Template
from storage.representation import utc_column

blp = Blueprint("templates", __name__, url_prefix="/templates", description="Notification templates")
blp.ARGUMENTS_PARSER = JsonParser()

NAME = r"[a-z0-9_.-]{1,100}"
MAX_LOCALES = 100


class TemplateRequest(Schema):
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))
    default_locale = fields.String(
        required=True, validate=validate.Regexp(rf"^{rendering.LOCALE.pattern}$"), metadata={"example": "en"}
    )
    locales = fields.Dict(
        keys=fields.String(
            validate=[validate.Length(max=35), validate.Regexp(rf"^{rendering.LOCALE.pattern}$")]
        ),
        values=fields.Dict(
            keys=fields.String(), values=Text(validate=validate.Length(max=rendering.MAX_SOURCE))
        ),
        required=True,
        validate=validate.Length(min=1, max=MAX_LOCALES),
        metadata={
            "description": "per locale: `subject`, `text` and `html` (email) or `title` and `text` (push), "
            "as Jinja2 sources"
        },
    )

    @validates_schema
    def _compiles(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if data["default_locale"] not in data["locales"]:
            raise ValidationError("Must be one of the template's locales.", "default_locale")
        allowed = rendering.FIELDS[data["channel"]]
        errors: dict[str, dict[str, list[str]]] = {}
        for locale, texts in data["locales"].items():
            problems = {field: ["Unknown field."] for field in texts if field not in allowed}
            if "text" not in texts:
                problems["text"] = ["Missing data for required field."]
            for field, source in texts.items():
                if field in allowed and (found := rendering.source_errors(field, source)):
                    problems[field] = found
            if problems:
                errors[locale] = problems
        if errors:
            raise ValidationError(errors, "locales")


class TemplateSchema(Schema):
    name = fields.String()
    channel = fields.String(metadata={"enum": list(CHANNELS)})
    default_locale = fields.String()
    locales = fields.Dict(
        keys=fields.String(), values=fields.Dict(keys=fields.String(), values=fields.String())
    )
    created_at = utc_column("created_at")
    updated_at = utc_column("updated_at")


class TemplateList(Schema):
    count = fields.Integer(metadata={"description": "how many templates there are"})
    templates = fields.List(fields.Nested(TemplateSchema))


class TemplateListArgs(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=10_000_000))


def _named(name: str) -> str:
    if not re.fullmatch(NAME, name):
        abort(422, errors={"json": {"name": ["Must be 1-100 characters of a-z, 0-9, _, . and -."]}})
    return name


def _found(name: str) -> Template:
    try:
        return templates.get(name)
    except templates.TemplateNotFound:
        abort(404, message=f"Template {name!r} not found.")
    raise AssertionError("unreachable: abort raises")


@blp.route("")
class Templates(MethodView):
    @blp.arguments(TemplateListArgs(), location="query")
    @blp.response(200, TemplateList)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List templates by name"""
        query = templates.listing()
        return {"count": query.count(), "templates": list(query.limit(args["limit"]).offset(args["offset"]))}


@blp.route("/<string:name>")
class TemplateByName(MethodView):
    @blp.arguments(TemplateRequest())
    @blp.response(200, TemplateSchema, description="Replaced")
    @blp.alt_response(201, schema=TemplateSchema, description="Created")
    def put(self, body: dict[str, Any], name: str) -> tuple[Template, int]:
        """Create or replace a template"""
        template, created = templates.put(_named(name), **body)
        return template, 201 if created else 200

    @blp.response(200, TemplateSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, name: str) -> Template:
        """Get one template"""
        return _found(name)

    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    def delete(self, name: str) -> None:
        """Delete a template; notifications already accepted keep their texts"""
        try:
            templates.delete(name)
        except templates.TemplateNotFound:
            abort(404, message=f"Template {name!r} not found.")
