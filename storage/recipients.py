"""Recipients' profiles: store, change, read and list them; what they opt out of."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import peewee

from storage.clock import utcnow
from storage.database import db
from storage.models import Recipient

# The profile's fields a client sets; the rest (id, created_at, updated_at) the storage keeps.
PROFILE_FIELDS = ("email", "timezone", "locale", "delivery_window", "preferences")


class RecipientNotFound(LookupError):
    """No recipient has that id."""


def get(recipient_id: str) -> Recipient:
    try:
        return Recipient.get_by_id(recipient_id)
    except peewee.DoesNotExist:
        raise RecipientNotFound(recipient_id) from None


def find(recipient_id: str) -> Recipient | None:
    """The recipient's profile, or None when there is none."""
    return Recipient.get_or_none(Recipient.id == recipient_id)


def profiles(recipient_ids: Iterable[str]) -> dict[str, Recipient]:
    """The profiles of those of ``recipient_ids`` that have one, by id, in one query."""
    wanted = set(recipient_ids)
    if not wanted:
        return {}
    return {r.id: r for r in Recipient.select().where(Recipient.id.in_(list(wanted)))}


def replace(recipient_id: str, profile: dict[str, Any]) -> tuple[Recipient, bool]:
    """Create or replace a profile whole (fields not given are cleared); return it and whether it is new."""
    values = {name: profile.get(name) for name in PROFILE_FIELDS}
    now = utcnow()
    replaced = Recipient.update(**values, updated_at=now).where(Recipient.id == recipient_id)
    if replaced.execute():
        return get(recipient_id), False
    try:
        with db.atomic():
            Recipient.insert(id=recipient_id, **values, created_at=now, updated_at=now).execute()
    except peewee.IntegrityError:
        # A concurrent PUT created it meanwhile: this one replaces it.
        replaced.execute()
        return get(recipient_id), False
    return get(recipient_id), True


def update(recipient_id: str, changes: dict[str, Any]) -> Recipient:
    """Replace the fields ``changes`` names, each whole; RecipientNotFound when there is no profile."""
    values = {name: changes[name] for name in PROFILE_FIELDS if name in changes}
    changed = Recipient.update(**values, updated_at=utcnow()).where(Recipient.id == recipient_id).execute()
    if not changed:
        raise RecipientNotFound(recipient_id)
    return get(recipient_id)


def opted_out(profile: Recipient | None, channel: str, category: str | None) -> str | None:
    """Why the recipient does not want this channel (or this category on it), or None when it may go.

    Unknown categories and missing preferences mean allowed.
    """
    preferences = (profile.preferences if profile is not None else None) or {}
    if (preferences.get("channels") or {}).get(channel) is False:
        return f"Recipient opted out of {channel}"
    if (
        category is not None
        and ((preferences.get("categories") or {}).get(category) or {}).get(channel) is False
    ):
        return f"Recipient opted out of {category} {channel}"
    return None


def listing() -> peewee.ModelSelect[Recipient]:
    """All profiles, newest first."""
    return Recipient.select().order_by(Recipient.created_at.desc(), Recipient.id)


def turn_off(recipient_id: str, channel: str, category: str | None) -> Recipient:
    """Turn the channel off for the recipient (for ``category`` only, when given), creating its profile.

    The preferences are one JSON document: the change is written only if the profile is still as it
    was read, else read again, so that concurrent changes are not lost.
    """
    while True:
        profile = find(recipient_id)
        if profile is None:
            replace(recipient_id, {"preferences": _switched_off({}, channel, category)})
            continue  # read back, and switched off again if a concurrent PUT replaced it meanwhile
        preferences = profile.preferences or {}
        if opted_out(profile, channel, category):
            return profile
        changed = (
            Recipient.update(preferences=_switched_off(preferences, channel, category), updated_at=utcnow())
            .where((Recipient.id == recipient_id) & (Recipient.updated_at == profile.updated_at))
            .execute()
        )
        if changed:
            return get(recipient_id)


def _switched_off(preferences: dict[str, Any], channel: str, category: str | None) -> dict[str, Any]:
    if category is None:
        return {**preferences, "channels": {**(preferences.get("channels") or {}), channel: False}}
    categories = preferences.get("categories") or {}
    switches = {**(categories.get(category) or {}), channel: False}
    return {**preferences, "categories": {**categories, category: switches}}
