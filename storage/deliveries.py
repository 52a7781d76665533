"""A push notification's deliveries: one per device of its recipient, or one to the webhook or outbox.

When a message claims a push notification, ``plan`` says where it goes on this attempt: on the first
attempt (of the notification, or since it was forced) to every active device of its recipient that
has not accepted it yet, or to the webhook or outbox when the recipient has none; on a retry only to
the deliveries still pending. ``record`` writes the outcomes, in the transaction of the notification's
own transition, so that they count only while the message's claim holds.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import peewee

from storage import devices
from storage.clock import utcnow
from storage.models import (
    DELIVERED_DELIVERY,
    FAILED_DELIVERY,
    PENDING_DELIVERY,
    Delivery,
    Device,
    NotificationEvent,
)

_FALLBACK = "fallback"


def delivery_id(notification_id: Any, device_id: Any | None) -> str:
    """A delivery's id, the same whoever computes it: one row per notification and device."""
    return str(uuid.uuid5(uuid.UUID(str(notification_id)), str(device_id) if device_id else _FALLBACK))


@dataclass(frozen=True)
class Target:
    """Where a notification goes on this attempt: a device, or the webhook or outbox (``device`` None)."""

    notification_id: str
    kind: str
    device: Device | None = None

    @property
    def id(self) -> str:
        return delivery_id(self.notification_id, self.device.id if self.device else None)

    @property
    def device_id(self) -> str | None:
        return str(self.device.id) if self.device else None


@dataclass(frozen=True)
class Result:
    """The outcome of one delivery on this attempt.

    ``status`` is ``delivered``, ``failed``, or ``pending`` (to be retried). ``attempted`` is False for
    a delivery failed without sending (its device disabled, removed or moved meanwhile). ``event`` is
    the kind of the history event recorded for a device's outcome.
    """

    notification_id: str
    device_id: str | None
    kind: str
    status: str
    event: str
    provider_message_id: str | None = None
    error: str | None = None
    attempted: bool = True

    @property
    def id(self) -> str:
        return delivery_id(self.notification_id, self.device_id)


@dataclass
class Plan:
    """A notification's deliveries on this attempt: where to send, and what is settled already."""

    targets: list[Target] = field(default_factory=list)
    # Settled deliveries: accepted on an earlier attempt, failed on one, or failed just now unsent.
    delivered: int = 0
    failed: list[Result] = field(default_factory=list)


def plan(
    notifications: Sequence[tuple[str, str, bool]], *, fallback: str, host: str, at: dt.datetime | None = None
) -> dict[str, Plan]:
    """Where each of these claimed notifications goes now; writes the deliveries it starts.

    ``notifications`` are ``(id, recipient_id, first)`` where ``first`` says the attempt is the first
    (of the notification, or since it was forced). ``fallback`` is the kind of delivery (``webhook``
    or ``outbox``) for a recipient without an active device.
    """
    if not notifications:
        return {}
    at = at or utcnow()
    existing: dict[str, list[Delivery]] = {}
    for row in Delivery.select().where(Delivery.notification_id.in_([nid for nid, _, _ in notifications])):
        existing.setdefault(str(row.notification_id), []).append(row)
    anew = {nid for nid, _, first in notifications if first or nid not in existing}
    active = devices.active_of(recipient for nid, recipient, _ in notifications if nid in anew)
    pending_devices = devices.by_id(
        row.device_id
        for nid, _, _ in notifications
        if nid not in anew
        for row in existing.get(nid, [])
        if row.status == PENDING_DELIVERY and row.device_id is not None
    )
    plans: dict[str, Plan] = {}
    started: list[Target] = []
    unsent: list[Result] = []
    for nid, recipient, _ in notifications:
        rows = existing.get(nid, [])
        if nid in anew:
            targets, skipped = _anew(nid, rows, active.get(recipient, []), fallback)
            started += targets
        else:
            targets, skipped = _again(nid, rows, pending_devices, recipient)
        unsent += skipped
        tried_again = {t.id for t in targets}
        plans[nid] = Plan(
            targets=targets,
            delivered=sum(1 for r in rows if r.status == DELIVERED_DELIVERY),
            failed=[_settled(r) for r in rows if r.status == FAILED_DELIVERY and str(r.id) not in tried_again]
            + skipped,
        )
    _start(started, at)
    record(unsent, at=at, host=host)
    return plans


def _anew(
    nid: str, rows: list[Delivery], active: list[Device], fallback: str
) -> tuple[list[Target], list[Result]]:
    """A first attempt: every active device that has not accepted it, else the fallback."""
    accepted = {str(r.device_id) for r in rows if r.status == DELIVERED_DELIVERY}
    targets = [Target(nid, d.kind, d) for d in active if str(d.id) not in accepted]
    if not targets and not accepted:
        targets = [Target(nid, fallback)]
    wanted = {t.id for t in targets}
    # Pending from before, but no target now: its device was disabled, or devices came for a
    # recipient that had none.
    skipped = [
        _unsent(r, "not sent: the recipient's devices changed")
        for r in rows
        if r.status == PENDING_DELIVERY and str(r.id) not in wanted
    ]
    return targets, skipped


def _again(
    nid: str, rows: list[Delivery], devices_by_id: dict[str, Device], recipient: str
) -> tuple[list[Target], list[Result]]:
    """A retry: the deliveries still pending, unless their device went meanwhile."""
    targets: list[Target] = []
    skipped: list[Result] = []
    for row in rows:
        if row.status != PENDING_DELIVERY:
            continue
        if row.device_id is None:
            targets.append(Target(nid, row.kind))
            continue
        device = devices_by_id.get(str(row.device_id))
        problem = _unreachable(device, recipient)
        if problem:
            skipped.append(_unsent(row, problem))
        else:
            targets.append(Target(nid, row.kind, device))
    return targets, skipped


def _unreachable(device: Device | None, recipient: str) -> str | None:
    """Why a pending delivery's device may no longer be sent to, if so."""
    if device is None:
        return "not sent: the device was removed"
    if not device.active:
        return f"not sent: the device was disabled ({device.disabled_reason})"
    if device.recipient_id != recipient:
        return "not sent: the device was registered to another recipient"
    return None


def _unsent(row: Delivery, reason: str) -> Result:
    """A pending delivery failed without sending."""
    device_id = str(row.device_id) if row.device_id else None
    return Result(
        str(row.notification_id), device_id, row.kind, FAILED_DELIVERY, "device_skipped", None, reason, False
    )


def _settled(row: Delivery) -> Result:
    """A delivery that failed on an earlier attempt, as the summary of a failure names it."""
    device_id = str(row.device_id) if row.device_id else None
    return Result(
        str(row.notification_id), device_id, row.kind, FAILED_DELIVERY, "device_failed", error=row.error
    )


def _start(targets: Iterable[Target], at: dt.datetime) -> None:
    """Write the deliveries an attempt starts as pending: new ones, and failed ones tried again."""
    rows = [
        {
            "id": t.id,
            "notification_id": t.notification_id,
            "device_id": t.device_id,
            "kind": t.kind,
            "status": PENDING_DELIVERY,
            "attempts": 0,
            "updated_at": at,
        }
        for t in targets
    ]
    if not rows:
        return
    Delivery.insert_many(rows).on_conflict(
        conflict_target=[Delivery.id],
        update={
            Delivery.status: PENDING_DELIVERY,
            Delivery.kind: peewee.EXCLUDED.kind,
            Delivery.error: None,
            Delivery.updated_at: peewee.EXCLUDED.updated_at,
        },
    ).execute()


def record(results: Iterable[Result], *, host: str, at: dt.datetime | None = None) -> None:
    """Write these outcomes, each device's in the notification's history, and when devices accepted.

    Call it in the transaction of the notifications' own transition, once that held.
    """
    results = list(results)
    if not results:
        return
    at = at or utcnow()
    rows = [
        {
            "id": r.id,
            "notification_id": r.notification_id,
            "device_id": r.device_id,
            "kind": r.kind,
            "status": r.status,
            "attempts": int(r.attempted),
            "provider_message_id": r.provider_message_id,
            "error": r.error,
            "delivered_at": at if r.status == DELIVERED_DELIVERY else None,
            "updated_at": at,
        }
        for r in results
    ]
    Delivery.insert_many(rows).on_conflict(
        conflict_target=[Delivery.id],
        update={
            Delivery.status: peewee.EXCLUDED.status,
            Delivery.attempts: Delivery.attempts + peewee.EXCLUDED.attempts,
            Delivery.provider_message_id: peewee.EXCLUDED.provider_message_id,
            Delivery.error: peewee.EXCLUDED.error,
            Delivery.delivered_at: peewee.EXCLUDED.delivered_at,
            Delivery.updated_at: peewee.EXCLUDED.updated_at,
        },
    ).execute()
    by_device = [r for r in results if r.device_id is not None]
    if by_device:
        NotificationEvent.insert_many(
            [
                {
                    "notification_id": r.notification_id,
                    "kind": r.event,
                    "at": at,
                    "host": host,
                    "detail": describe(r),
                }
                for r in by_device
            ]
        ).execute()
    devices.succeeded((r.device_id for r in by_device if r.status == DELIVERED_DELIVERY), at)


def describe(result: Result) -> str:
    """One delivery's outcome in a line: ``webpush 3f2a…: 410 Gone``."""
    where = f"{result.kind} {result.device_id}" if result.device_id else result.kind
    what = result.provider_message_id if result.status == DELIVERED_DELIVERY else result.error
    return f"{where}: {what}" if what else where


def summary(results: Sequence[Result]) -> str:
    """Why deliveries failed, for the notification's ``last_error``: the reason alone for one fallback."""
    if len(results) == 1 and results[0].device_id is None:
        return results[0].error or "failed"
    return "; ".join(describe(r) for r in results)


def of_notification(notification_id: Any) -> list[Delivery]:
    """A notification's deliveries, the webhook's or outbox's first, then by kind and device."""
    return list(
        Delivery.select()
        .where(Delivery.notification_id == notification_id)
        .order_by(Delivery.device_id.is_null(False), Delivery.kind, Delivery.device_id)
    )
