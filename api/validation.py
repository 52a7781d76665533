"""Limits on what a client sends beyond what a schema's types say: text, ids, `data`, depth, categories."""

from __future__ import annotations

import json
import re
import typing
from typing import Any

from flask import current_app
from flask_smorest import abort
from marshmallow import ValidationError, fields
from webargs.flaskparser import FlaskParser


class JsonParser(FlaskParser):
    """webargs' parser, answering 400 to a body nested too deeply for Python's JSON decoder (not 500)."""

    def _raw_load_json(self, req: Any) -> Any:
        try:
            return super()._raw_load_json(req)
        except RecursionError:
            abort(400, errors={"json": ["The JSON body is nested too deeply."]})


class Text(fields.String):
    """A string any database can store: no NUL characters, no unpaired UTF-16 surrogates."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = typing.cast(str, super()._deserialize(value, attr, data, **kwargs))
        if "\x00" in text or not encodable(text):
            raise ValidationError("Must not contain NUL characters or unpaired surrogates.")
        return text


def printable(value: str) -> None:
    """A one-line identifier: no control, format or separator characters other than the space."""
    if not value.isprintable():
        raise ValidationError("Must contain only printable characters.")


def bounded_json(value: Any) -> None:
    """A JSON document no deeper than MAX_DATA_DEPTH and no longer than MAX_DATA_BYTES serialised."""
    max_depth, max_bytes = current_app.config["MAX_DATA_DEPTH"], current_app.config["MAX_DATA_BYTES"]
    if _depth(value, max_depth) > max_depth:
        raise ValidationError(f"Must not be nested more than {max_depth} levels deep.")
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ValidationError(f"Must not be longer than {max_bytes} bytes as JSON; it is {size}.")


def _depth(value: Any, stop_after: int) -> int:
    """How deeply objects and arrays nest in ``value`` (a scalar is 0), counted at most to stop_after + 1."""
    deepest, level = 0, [(value, 0)]
    while level:
        node, depth = level.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > stop_after:
            break
        level.extend((child, depth + 1) for child in children)
    return deepest


def encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_CATEGORY = re.compile(r"[a-z0-9_.-]{1,64}")


def is_category(value: str) -> bool:
    """A notification category: 1-64 characters of ``[a-z0-9_.-]``."""
    return _CATEGORY.fullmatch(value) is not None


def category_name(value: str) -> None:
    if not is_category(value):
        raise ValidationError("Must be 1-64 characters of a-z, 0-9, '_', '.' and '-'.")
