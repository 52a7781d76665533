"""Recipients' devices: registered (or registered again), listed, deleted, and disabled when gone."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Iterable
from typing import Any, NamedTuple

import peewee

from storage import status_events
from storage.clock import utcnow
from storage.database import db, is_postgres
from storage.models import Device


class DeviceNotFound(LookupError):
    """The recipient has no device with that id."""


class Reachable(NamedTuple):
    """A device as a delivery reads it: what its sender needs, whose it is, and whether it is active.

    A tuple, not a model instance: every push notification reads one per device, and peewee's
    instances cost as much as the statement that read them.
    """

    id: str
    recipient_id: str
    kind: str
    address: str
    p256dh: str | None
    auth: str | None
    environment: str | None
    last_seen_at: dt.datetime
    active: bool
    disabled_reason: str | None


_REACHABLE = [getattr(Device, name) for name in Reachable._fields]


def _reachable(rows: Iterable[Any]) -> list[Reachable]:
    return [Reachable(str(row[0]), *row[1:]) for row in rows]


def digest(address: str) -> str:
    """What the unique index holds of an address (see ``Device.address_digest``)."""
    return hashlib.sha256(address.encode("utf-8")).hexdigest()


def register(
    recipient_id: str,
    *,
    kind: str,
    address: str,
    p256dh: str | None = None,
    auth: str | None = None,
    environment: str | None = None,
    label: str | None = None,
) -> tuple[Device, bool]:
    """Register a device; True when it is new.

    A ``kind`` and ``address`` registered already is the same device: one upsert makes it active
    again, notes when it was seen, takes the new keys and moves it to ``recipient_id``; a label not
    given keeps the one it had.
    """
    now = utcnow()
    new_id = uuid.uuid4()
    rows = list(
        Device.insert(
            id=new_id,
            recipient_id=recipient_id,
            kind=kind,
            address=address,
            address_digest=digest(address),
            p256dh=p256dh,
            auth=auth,
            environment=environment,
            label=label,
            active=True,
            created_at=now,
            last_seen_at=now,
        )
        .on_conflict(
            conflict_target=[Device.kind, Device.address_digest],
            update={
                Device.recipient_id: peewee.EXCLUDED.recipient_id,
                Device.p256dh: peewee.EXCLUDED.p256dh,
                Device.auth: peewee.EXCLUDED.auth,
                Device.environment: peewee.EXCLUDED.environment,
                Device.label: peewee.fn.COALESCE(peewee.EXCLUDED.label, Device.label),
                Device.active: True,
                Device.last_seen_at: peewee.EXCLUDED.last_seen_at,
                Device.disabled_at: None,
                Device.disabled_reason: None,
            },
        )
        .returning(Device)
        .execute()
    )
    device = rows[0]
    return device, device.id == new_id


def of_recipient(recipient_id: str) -> list[Device]:
    """A recipient's devices, active and disabled, oldest first."""
    return list(
        Device.select().where(Device.recipient_id == recipient_id).order_by(Device.created_at, Device.id)
    )


def count_of(recipient_id: str) -> int:
    """How many devices a recipient has registered, active and disabled."""
    return int(Device.select().where(Device.recipient_id == recipient_id).count())


def delete(recipient_id: str, device_id: Any) -> None:
    """Forget a recipient's device; ``DeviceNotFound`` when it is not theirs (or not at all)."""
    theirs = (Device.id == device_id) & (Device.recipient_id == recipient_id)
    if not Device.delete().where(theirs).execute():
        raise DeviceNotFound(str(device_id))


def disable(device_id: Any, reason: str, *, seen: dt.datetime | None = None) -> bool:
    """Stop sending to an active device; False when it was not active.

    With ``seen`` (the ``last_seen_at`` the caller read), a device registered again since then stays
    active: the push service spoke of the registration before.
    """
    condition = (Device.id == device_id) & Device.active
    if seen is not None:
        condition &= Device.last_seen_at == seen
    with db.atomic():
        rows = list(
            Device.update(active=False, disabled_at=utcnow(), disabled_reason=reason)
            .where(condition)
            .returning(Device)
            .execute()
        )
        for device in rows:
            status_events.record_device_disabled(device)
    return bool(rows)


def active_of(recipient_ids: Iterable[str]) -> dict[str, list[Reachable]]:
    """The active devices of each of these recipients, oldest first (those with none are left out)."""
    found: dict[str, list[Reachable]] = {}
    wanted = list(set(recipient_ids))
    if not wanted:
        return found
    if is_postgres():
        # Asked for every message a worker handles: one array parameter, in a statement written once
        # (peewee builds a parameter per value of an IN list, and the statement anew each time).
        rows = _reachable(db.execute_sql(PG_ACTIVE_OF, (wanted,)).fetchall())
    else:
        rows = _reachable(
            Device.select(*_REACHABLE)
            .where(Device.recipient_id.in_(wanted) & Device.active)
            .order_by(Device.created_at, Device.id)
            .tuples()
        )
    for device in rows:
        found.setdefault(device.recipient_id, []).append(device)
    return found


# ``active_of``'s statement on PostgreSQL, its one parameter the array of recipient ids. Each
# recipient's devices are looked up on their own (``OFFSET 0`` keeps the planner from merging the
# lookup into a join), which the recipient index serves whatever the statistics say: given
# ``recipient_id = ANY(...)`` or a join, a planner without statistics yet (a table just filled)
# reads the whole table for every message instead.
PG_ACTIVE_OF = f"""
SELECT {", ".join(f"d.{name}" for name in Reachable._fields)} FROM unnest(%s::text[]) AS r(id)
CROSS JOIN LATERAL (SELECT * FROM device WHERE recipient_id = r.id AND active OFFSET 0) AS d
ORDER BY d.created_at, d.id
"""


def by_id(device_ids: Iterable[Any]) -> dict[str, Reachable]:
    """The devices with these ids that still exist, active or not, by id as text."""
    wanted = [str(d) for d in set(device_ids)]
    if not wanted:
        return {}
    rows = Device.select(*_REACHABLE).where(Device.id.in_(wanted)).tuples()
    return {device.id: device for device in _reachable(rows)}


def succeeded(device_ids: Iterable[Any], at: dt.datetime) -> None:
    """Note that these devices accepted a notification at ``at``."""
    wanted = [str(d) for d in set(device_ids)]
    if wanted:
        Device.update(last_success_at=at).where(Device.id.in_(wanted)).execute()
