"""Templates' texts: checked when stored, rendered per locale when a notification is accepted.

Jinja2's sandbox with StrictUndefined: a template reads only the variables it is given, never an
attribute starting with ``_``, and a missing variable is an error, not an empty string. HTML is
autoescaped in ``html`` and nowhere else (a subject or a text part is not HTML).
"""

from __future__ import annotations

import functools
import operator
import re
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, nodes
from jinja2.sandbox import SandboxedEnvironment, SecurityError

# The texts a locale of each channel's templates has; ``text`` is required.
FIELDS = {"email": ("subject", "text", "html"), "push": ("title", "text")}
_ORDER = ("subject", "title", "text", "html")
MAX_SOURCE = 100_000
# The longest string or list ``*`` may make, and the largest exponent ``**`` may take: a template
# must not be able to ask for gigabytes in a few characters.
_MAX_REPEAT = 1_000_000
_MAX_EXPONENT = 100
_NAME = "<template>"
# Rendering stops past this many characters: well past every limit on a text, which is checked after.
_STOP_AFTER = 200_000
LOCALE = re.compile(r"[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8})*")


class RenderError(Exception):
    """A template that would not render with the variables given; ``field`` is what to blame."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        #: Which notification of a batch it was.
        self.item: int | None = None


class _Sandbox(SandboxedEnvironment):
    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if isinstance(right, int | float) and abs(right) > _MAX_EXPONENT:
                raise SecurityError(f"exponent {right} is larger than {_MAX_EXPONENT}")
            return operator.pow(left, right)
        for sequence, times in ((left, right), (right, left)):
            repeats = isinstance(sequence, str | list | tuple) and isinstance(times, int)
            if repeats and len(sequence) * times > _MAX_REPEAT:
                raise SecurityError(f"the repetition would be longer than {_MAX_REPEAT}")
        return operator.mul(left, right)


_TEXT = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_HTML = _Sandbox(undefined=StrictUndefined, autoescape=True, keep_trailing_newline=True)


def _environment(field: str) -> _Sandbox:
    return _HTML if field == "html" else _TEXT


@functools.lru_cache(maxsize=1024)
def _compiled(field: str, source: str) -> Template:
    return _environment(field).from_string(source)


def source_errors(field: str, source: str) -> list[str]:
    """Why a field's source cannot be a template (with the line), or nothing."""
    environment = _environment(field)
    try:
        tree = environment.parse(source)
    except TemplateSyntaxError as exc:
        return [f"line {exc.lineno}: {exc.message}"]
    errors = []
    # The sandbox refuses these when rendering too; refused here, a template using them is never stored.
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        name = (
            node.attr
            if isinstance(node, nodes.Getattr)
            else getattr(getattr(node, "arg", None), "value", None)
        )
        if isinstance(name, str) and name.startswith("_"):
            errors.append(f"line {node.lineno}: access to {name!r} is not allowed")
    if not errors:
        try:
            _compiled(field, source)
        except TemplateSyntaxError as exc:
            errors.append(f"line {exc.lineno}: {exc.message}")
    return errors


def choose_locale(available: Mapping[str, Any], default: str, wanted: str | None) -> str:
    """The locale to render: ``wanted`` if there, else its language (pl-PL, then pl), else the default."""
    by_lower = {locale.lower().replace("_", "-"): locale for locale in available}
    if wanted:
        parts = wanted.lower().replace("_", "-").split("-")
        for length in range(len(parts), 0, -1):
            found = by_lower.get("-".join(parts[:length]))
            if found is not None:
                return found
    return default


@dataclass(frozen=True)
class Rendered:
    locale: str
    texts: dict[str, str]  # field: rendered text, for each field the locale has


def render(
    locales: Mapping[str, Mapping[str, str]], default: str, wanted: str | None, variables: Any
) -> Rendered:
    """Render one locale's fields with ``variables``; RenderError names what failed and where."""
    locale = choose_locale(locales, default, wanted)
    texts = {}
    sources = locales[locale]
    # In the order a reader meets them, whatever order the client sent.
    for field, source in sorted(sources.items(), key=lambda item: _ORDER.index(item[0])):
        try:
            texts[field] = _render(field, source, variables or {})
        except SecurityError as exc:
            raise RenderError("variables", f"{_where(locale, field, exc)}: not allowed: {exc}") from None
        except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
            raise RenderError("variables", f"{_where(locale, field, exc)}: {exc}") from None
    return Rendered(locale, texts)


def _render(field: str, source: str, variables: Mapping[str, Any]) -> str:
    """The text, cut once too long for any limit: the limits refuse it after, without the memory spent."""
    chunks, length = [], 0
    for chunk in _compiled(field, source).generate(variables):
        chunks.append(chunk)
        length += len(chunk)
        if length > _STOP_AFTER:
            break
    return "".join(chunks)


def _where(locale: str, field: str, exc: BaseException) -> str:
    """``locale pl, text, line 3``: the line from the template's frames in the traceback, if any."""
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == _NAME]
    line = getattr(exc, "lineno", None) or (lines[-1] if lines else None)
    return f"locale {locale}, {field}" + (f", line {line}" if line else "")
