"""Templates: stored, replaced, read, listed and deleted by name."""

from __future__ import annotations

from typing import Any

import peewee

from storage.clock import utcnow
from storage.models import Template


class TemplateNotFound(LookupError):
    """No template has the name."""


def put(name: str, *, channel: str, default_locale: str, locales: dict[str, Any]) -> tuple[Template, bool]:
    """Create the template or replace the one of that name; return it and whether it was created."""
    now = utcnow()
    fields = {"channel": channel, "default_locale": default_locale, "locales": locales, "updated_at": now}
    while True:
        # Whichever of several creators inserts first created it; the others replace it.
        inserted = (
            Template.insert(name=name, created_at=now, **fields).on_conflict_ignore().as_rowcount().execute()
        )
        if inserted:
            return get(name), True
        if Template.update(**fields).where(Template.name == name).execute():
            return get(name), False
        # Deleted between the two statements: create it again.


def get(name: str) -> Template:
    try:
        return Template.get_by_id(name)
    except peewee.DoesNotExist:
        raise TemplateNotFound(name) from None


def delete(name: str) -> None:
    """Delete the template; notifications already rendered from it keep their texts."""
    if not Template.delete().where(Template.name == name).execute():
        raise TemplateNotFound(name)


def listing() -> peewee.ModelSelect[Template]:
    """Every template, by name."""
    return Template.select().order_by(Template.name)
