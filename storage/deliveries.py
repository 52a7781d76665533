"""A push notification's deliveries: one per device of its recipient, or one to the webhook or outbox.

When a message claims a push notification, ``plan`` says where it goes on this attempt: on the first
attempt (of the notification, or since it was forced) to every active device of its recipient that
has not accepted it yet, or to the webhook or outbox when the recipient has none; on a retry only to
the deliveries still pending. ``record`` writes the outcomes, in the transaction of the notification's
own transition, so that they count only while the message's claim holds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import peewee
from peewee import SQL

from storage import devices
from storage.clock import utcnow
from storage.database import db, is_postgres
from storage.models import (
    DELIVERED_DELIVERY,
    FAILED_DELIVERY,
    PENDING_DELIVERY,
    Delivery,
    NotificationEvent,
)

_FALLBACK = "fallback"


# The key's second half for a delivery to the webhook or outbox (see Delivery.target_id).
FALLBACK_TARGET = "00000000-0000-0000-0000-000000000000"


# Tuples, not dataclasses: every push notification makes one of each, and a tuple costs a third.
class Target(NamedTuple):
    """Where a notification goes on this attempt: a device, or the webhook or outbox (``device`` None)."""

    notification_id: str
    kind: str
    device: devices.Reachable | None = None

    @property
    def target_id(self) -> str:
        return self.device_id or FALLBACK_TARGET

    @property
    def device_id(self) -> str | None:
        return self.device.id if self.device else None


class Result(NamedTuple):
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
    def target_id(self) -> str:
        return self.device_id or FALLBACK_TARGET


@dataclass
class Plan:
    """A notification's deliveries on this attempt: where to send, and what is settled already."""

    targets: list[Target] = field(default_factory=list)
    # Settled deliveries: accepted on an earlier attempt, failed on one, or failed just now unsent.
    delivered: int = 0
    failed: list[Result] = field(default_factory=list)


class Claim(NamedTuple):
    """A push notification a message claimed, as far as planning its deliveries reads it."""

    notification_id: str
    recipient_id: str
    attempt_count: int  # counting the attempt claimed
    attempts_at_force: int
    # False when the claim found the recipient without an active device: none to look up then.
    has_devices: bool | None = None

    @property
    def first(self) -> bool:
        """The first attempt of the notification, or the first since it was forced."""
        return self.attempt_count - self.attempts_at_force == 1


def plan(
    claims: Sequence[Claim], *, fallback: str, host: str, at: dt.datetime | None = None
) -> dict[str, Plan]:
    """Where each of these claimed notifications goes now; writes the deliveries it starts.

    ``fallback`` is the kind of delivery (``webhook`` or ``outbox``) for a recipient without an
    active device.
    """
    if not claims:
        return {}
    at = at or utcnow()
    # A notification claimed for its very first attempt has no deliveries yet: a claim given back
    # untried forgets the ones it started (see forget_untried).
    existing = _of_notifications([c.notification_id for c in claims if c.attempt_count > 1])
    anew = {c.notification_id for c in claims if c.first or c.notification_id not in existing}
    active = devices.active_of(
        c.recipient_id for c in claims if c.notification_id in anew and c.has_devices is not False
    )
    pending_devices = devices.by_id(
        row.device_id
        for c in claims
        if c.notification_id not in anew
        for row in existing.get(c.notification_id, [])
        if row.status == PENDING_DELIVERY and row.device_id is not None
    )
    plans: dict[str, Plan] = {}
    started: list[Target] = []
    unsent: list[Result] = []
    for nid, recipient, *_ in claims:
        rows = existing.get(nid, [])
        if nid in anew:
            targets, skipped = _anew(nid, rows, active.get(recipient, []), fallback)
            # A device's delivery shows as pending from now; the webhook's or outbox's is written once
            # tried (one write, not two, for every notification of a recipient without devices).
            started += [t for t in targets if t.device is not None]
        else:
            targets, skipped = _again(nid, rows, pending_devices, recipient)
        if not rows:
            plans[nid] = Plan(targets=targets)
            continue
        unsent += skipped
        tried_again = {t.target_id for t in targets}
        plans[nid] = Plan(
            targets=targets,
            delivered=sum(1 for r in rows if r.status == DELIVERED_DELIVERY),
            failed=[
                _settled(r)
                for r in rows
                if r.status == FAILED_DELIVERY and str(r.target_id) not in tried_again
            ]
            + skipped,
        )
    _start(started, at)
    record(unsent, at=at, host=host)
    return plans


def _of_notifications(ids: list[str]) -> dict[str, list[Delivery]]:
    found: dict[str, list[Delivery]] = {}
    if not ids:
        return found
    # One array parameter on PostgreSQL: peewee builds a parameter per value of an IN list.
    of_these = (
        SQL("notification_id = ANY(%s::uuid[])", (ids,))
        if is_postgres()
        else Delivery.notification_id.in_(ids)
    )
    for row in Delivery.select().where(of_these):
        found.setdefault(str(row.notification_id), []).append(row)
    return found


def forget_untried(notification_ids: Iterable[str]) -> None:
    """Forget the deliveries a claim started but never tried, as it gives its notifications back."""
    ids = list(notification_ids)
    if ids:
        Delivery.delete().where(
            Delivery.notification_id.in_(ids)
            & (Delivery.status == PENDING_DELIVERY)
            & (Delivery.attempts == 0)
        ).execute()


def _anew(
    nid: str, rows: list[Delivery], active: list[devices.Reachable], fallback: str
) -> tuple[list[Target], list[Result]]:
    """A first attempt: every active device that has not accepted it, else the fallback."""
    accepted = {str(r.device_id) for r in rows if r.status == DELIVERED_DELIVERY}
    targets = [Target(nid, d.kind, d) for d in active if d.id not in accepted]
    if not targets and not accepted:
        targets = [Target(nid, fallback)]
    if not rows:
        return targets, []
    wanted = {t.target_id for t in targets}
    # Pending from before, but no target now: its device was disabled, or devices came for a
    # recipient that had none.
    skipped = [
        _unsent(r, "not sent: the recipient's devices changed")
        for r in rows
        if r.status == PENDING_DELIVERY and str(r.target_id) not in wanted
    ]
    return targets, skipped


def _again(
    nid: str, rows: list[Delivery], devices_by_id: dict[str, devices.Reachable], recipient: str
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


def _unreachable(device: devices.Reachable | None, recipient: str) -> str | None:
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


# PostgreSQL writes a message's deliveries with one array parameter per column, not a row of
# parameters per delivery for peewee to build (which cost more than the statement).
_PG_START = """
INSERT INTO delivery (target_id, notification_id, device_id, kind, status, attempts, updated_at)
SELECT t.target_id, t.notification_id, t.device_id, t.kind, 'pending', 0, %s
FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], %s::text[]) AS t(target_id, notification_id, device_id, kind)
ON CONFLICT (notification_id, target_id) DO UPDATE
SET status = 'pending', kind = EXCLUDED.kind, error = NULL, updated_at = EXCLUDED.updated_at
"""

# Outcomes, as data-modifying CTEs: the deliveries, the devices' events, and when devices accepted.
# ``{held}`` leaves out those of notifications whose claim did not hold, when they are part of the
# statement that marks them delivered (see transitions.mark_delivered).
_PG_RECORDING = """
recorded AS (
    INSERT INTO delivery
        (target_id, notification_id, device_id, kind, status, attempts, provider_message_id, error,
         delivered_at, updated_at)
    SELECT t.*, %s
    FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], %s::text[], %s::text[], %s::int[], %s::text[],
                %s::text[], %s::timestamp[])
        AS t(target_id, notification_id, device_id, kind, status, attempts, provider_message_id, error,
             delivered_at)
    {held}
    ON CONFLICT (notification_id, target_id) DO UPDATE
    SET status = EXCLUDED.status, attempts = delivery.attempts + EXCLUDED.attempts,
        provider_message_id = EXCLUDED.provider_message_id, error = EXCLUDED.error,
        delivered_at = EXCLUDED.delivered_at, updated_at = EXCLUDED.updated_at
)"""
# Devices' outcomes write more: their events, and when they accepted.
_PG_RECORDING_DEVICES = """, device_events AS (
    INSERT INTO notification_event (notification_id, kind, at, host, detail)
    SELECT e.notification_id, e.kind, %s, %s, e.detail
    FROM unnest(%s::uuid[], %s::text[], %s::text[]) AS e(notification_id, kind, detail)
    {held}
), device_success AS (
    -- A device another transaction holds is skipped, not waited for: its last success is not
    -- worth a lock wait, nor the deadlock of two messages updating one recipient's devices.
    UPDATE device SET last_success_at = %s
    WHERE id IN (
        SELECT d.id FROM device d
        JOIN unnest(%s::uuid[], %s::uuid[]) AS s(device_id, notification_id) ON d.id = s.device_id
        {held}
        ORDER BY d.id
        FOR UPDATE OF d SKIP LOCKED
    )
)"""


def pg_recording(held: str = "", *, by_device: bool = True) -> str:
    """The CTEs that write outcomes on PostgreSQL; ``held`` a condition on their ``notification_id``.

    Without ``by_device``, for outcomes of the webhook or outbox alone: a smaller statement to plan.
    """
    return (_PG_RECORDING + (_PG_RECORDING_DEVICES if by_device else "")).format(held=held)


def pg_recording_types(*, by_device: bool = True) -> tuple[str, ...]:
    """The types of ``pg_recording``'s parameters, in their order, for a prepared statement."""
    deliveries: tuple[str, ...] = ("timestamp", "uuid[]", "uuid[]", "uuid[]", "text[]", "text[]", "int[]")
    deliveries += ("text[]", "text[]", "timestamp[]")
    if not by_device:
        return deliveries
    return (*deliveries, "timestamp", "text", "uuid[]", "text[]", "text[]", "timestamp", "uuid[]", "uuid[]")


def pg_recording_params(results: Sequence[Result], at: dt.datetime, host: str) -> tuple[Any, ...]:
    """The parameters of ``pg_recording``'s CTEs, in their order: arrays, one per column."""
    by_device = [r for r in results if r.device_id is not None]
    accepted = [r for r in by_device if r.status == DELIVERED_DELIVERY]
    deliveries = (
        at,
        [r.target_id for r in results],
        [r.notification_id for r in results],
        [r.device_id for r in results],
        [r.kind for r in results],
        [r.status for r in results],
        [int(r.attempted) for r in results],
        [r.provider_message_id for r in results],
        [r.error for r in results],
        [at if r.status == DELIVERED_DELIVERY else None for r in results],
    )
    if not by_device:
        return deliveries
    return (
        *deliveries,
        at,
        host,
        [r.notification_id for r in by_device],
        [r.event for r in by_device],
        [describe(r) for r in by_device],
        at,
        [r.device_id for r in accepted],
        [r.notification_id for r in accepted],
    )


def _start(targets: Sequence[Target], at: dt.datetime) -> None:
    """Write the deliveries an attempt starts as pending: new ones, and failed ones tried again."""
    if not targets:
        return
    if is_postgres():
        columns = (
            [t.target_id for t in targets],
            [t.notification_id for t in targets],
            [t.device_id for t in targets],
        )
        db.execute_sql(_PG_START, (at, *columns, [t.kind for t in targets]))
        return
    rows = [
        {
            "target_id": t.target_id,
            "notification_id": t.notification_id,
            "device_id": t.device_id,
            "kind": t.kind,
            "status": PENDING_DELIVERY,
            "attempts": 0,
            "updated_at": at,
        }
        for t in targets
    ]
    Delivery.insert_many(rows).on_conflict(
        conflict_target=[Delivery.notification_id, Delivery.target_id],
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
    by_device = [r for r in results if r.device_id is not None]
    if is_postgres():
        statement = f"WITH {pg_recording(by_device=bool(by_device))} SELECT 1"
        db.execute_sql(statement, pg_recording_params(results, at, host))
        return
    rows = [
        {
            "target_id": r.target_id,
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
        conflict_target=[Delivery.notification_id, Delivery.target_id],
        update={
            Delivery.status: peewee.EXCLUDED.status,
            Delivery.attempts: Delivery.attempts + peewee.EXCLUDED.attempts,
            Delivery.provider_message_id: peewee.EXCLUDED.provider_message_id,
            Delivery.error: peewee.EXCLUDED.error,
            Delivery.delivered_at: peewee.EXCLUDED.delivered_at,
            Delivery.updated_at: peewee.EXCLUDED.updated_at,
        },
    ).execute()
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
