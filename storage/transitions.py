"""The state transitions of notifications, each one conditional UPDATE.

Every transition is one statement whose WHERE clause holds the precondition, so that of two racing
processes (a worker claiming, a client cancelling) exactly one wins, without a read-then-write.
Where PostgreSQL and SQLite need different SQL, the two stand side by side in the transition's
function: PostgreSQL does a message's rows in one statement, SQLite one row at a time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from storage import deliveries, events, status_events
from storage.clock import utcnow
from storage.database import Prepared, db, is_postgres
from storage.models import CANCELLED, DELIVERED, FAILED, PENDING, PROCESSING, Notification
from storage.queries import get


class TransitionConflict(Exception):
    """The notification's status does not allow the transition asked for."""

    def __init__(self, action: str, status: str, allowed: Iterable[str]) -> None:
        allowed_text = " or ".join(allowed)
        super().__init__(f"Cannot {action} a notification that is {status}; only {allowed_text} ones can be.")
        self.status = status


class Claimed(NamedTuple):
    """A row a message has just claimed: what its delivery needs, read in the claiming statement."""

    id: str
    channel: str
    recipient_id: str
    content: str
    subject: str | None
    title: str | None
    data: Any
    due_at: dt.datetime
    attempt_count: int
    attempts_at_force: int
    last_error: str | None
    worker_host: str
    html: str | None = None
    ttl: int | None = None
    urgency: str | None = None
    collapse_key: str | None = None
    category: str | None = None
    # Whether the recipient has an active device and a profile, when the claim could say at once
    # (None: not known, to be looked up); most recipients of a webhook have neither.
    has_devices: bool | None = None
    has_profile: bool | None = None


# Claimed's columns, in its order; the id as text, as every caller wants it. The two last, a look
# each at an index in the claiming statement, spare the message a query each when it is False.
_CLAIMED_COLUMNS = (
    "n.id::text, "
    + ", ".join(f"n.{name}" for name in Claimed._fields[1:-2])
    + ", n.channel = 'push' AND EXISTS"
    " (SELECT 1 FROM device d WHERE d.recipient_id = n.recipient_id AND d.active)"
    ", EXISTS (SELECT 1 FROM recipient r WHERE r.id = n.recipient_id)"
)


def _conflict_or_missing(notification_id: Any, action: str, allowed: Iterable[str]) -> TransitionConflict:
    return TransitionConflict(action, get(notification_id).status, allowed)


def opt_out(reasons: Mapping[Any, str], *, host: str) -> None:
    """Cancel just-accepted Pending rows, each for the reason given: their recipient opted out."""
    now = utcnow()
    with db.atomic():
        cancelled = []
        for notification_id, reason in reasons.items():
            if (
                Notification.update(status=CANCELLED, last_error=reason, lease_until=None, updated_at=now)
                .where((Notification.id == notification_id) & (Notification.status == PENDING))
                .execute()
            ):
                events.record(notification_id, "cancelled", host, detail=reason, at=now)
                cancelled.append(notification_id)
        if cancelled:
            status_events.record(Notification.select().where(Notification.id.in_(cancelled)))


def mark_opted_out(notification_id: Any, seq: int, *, host: str, reason: str) -> bool:
    """Cancel a claimed row without sending it: its recipient opted out since it was accepted."""
    with db.atomic():
        done = _finish(
            notification_id,
            seq,
            status=CANCELLED,
            last_error=reason,
            lease_until=None,
            attempt_count=Notification.attempt_count - 1,  # claimed, not attempted
        )
        if done:
            events.record(notification_id, "cancelled", host, detail=reason)
            status_events.record(Notification.select().where(Notification.id == notification_id))
    return done


def cancel(notification_id: Any, *, host: str) -> Notification:
    """Cancel a Pending notification; after this returns no message can claim it any more."""
    now = utcnow()
    with db.atomic():
        rows = list(
            Notification.update(status=CANCELLED, lease_until=None, updated_at=now)
            .where((Notification.id == notification_id) & (Notification.status == PENDING))
            .returning(Notification)
            .execute()
        )
        if not rows:
            raise _conflict_or_missing(notification_id, "cancel", [PENDING])
        events.record(notification_id, "cancelled", host, at=now)
        status_events.record(rows)
    return rows[0]


def force(notification_id: Any, *, host: str, lease: float) -> Notification:
    """Make a Pending or Failed notification due now; the caller publishes its new message."""
    now = utcnow()
    with db.atomic():
        rows = list(
            Notification.update(
                status=PENDING,
                due_at=now,
                forced=True,
                attempts_at_force=Notification.attempt_count,
                message_seq=Notification.message_seq + 1,
                lease_until=now + dt.timedelta(seconds=lease),
                updated_at=now,
            )
            .where((Notification.id == notification_id) & Notification.status.in_([PENDING, FAILED]))
            .returning(Notification)
            .execute()
        )
        if not rows:
            raise _conflict_or_missing(notification_id, "force", [PENDING, FAILED])
        events.record(notification_id, "forced", host, at=now)
    return rows[0]


# On PostgreSQL each of the worker's two writes per message is one statement for all the message's
# rows, the transitions and their events together through data-modifying CTEs, with the SQL written
# once and prepared once per connection. Every statement that changes many rows locks them in id
# order first, so that two of them racing over the same rows queue rather than deadlock.
# Rows are looked up by id alone, then checked: a condition on ``status`` would let the planner
# scan a status index instead, which its statistics, stale after a bulk load, can make look cheap
# (it then reads every Pending row for each statement).
_PG_CLAIM_SQL = f"""
WITH wanted AS (
    SELECT * FROM unnest(%s::uuid[], %s::int[]) AS w(id, seq)
), locked AS (
    SELECT id, status, message_seq FROM notification WHERE id = ANY(%s::uuid[])
    ORDER BY id
    FOR UPDATE
), claimed AS (
    UPDATE notification n
    SET status = 'Processing', attempt_count = n.attempt_count + 1, lease_until = %s, worker_host = %s,
        updated_at = %s
    FROM locked JOIN wanted ON locked.id = wanted.id
    WHERE n.id = locked.id AND locked.status = 'Pending' AND locked.message_seq = wanted.seq
    RETURNING n.*
), logged AS (
    INSERT INTO notification_event (notification_id, kind, at, host, detail)
    SELECT id, 'attempt', updated_at, worker_host, 'attempt ' || attempt_count FROM claimed
)
SELECT {_CLAIMED_COLUMNS} FROM claimed n ORDER BY n.due_at, n.id
"""
_PG_CLAIM = Prepared(
    "claim_notifications", _PG_CLAIM_SQL, ("uuid[]", "int[]", "uuid[]", "timestamp", "text", "timestamp")
)

# Marks rows delivered; what follows it writes the status events, the "delivered" events, and the
# deliveries too when there are any.
_PG_MARK_DELIVERED = """
WITH wanted AS (
    SELECT * FROM unnest(%s::uuid[], %s::int[], %s::text[]) AS w(id, seq, detail)
), locked AS (
    SELECT id, status, message_seq FROM notification WHERE id = ANY(%s::uuid[])
    ORDER BY id
    FOR UPDATE
), changed AS (
    UPDATE notification n
    SET status = 'Delivered', delivered_at = %s, lease_until = NULL, updated_at = %s
    FROM locked JOIN wanted ON locked.id = wanted.id AND locked.message_seq = wanted.seq
    WHERE n.id = locked.id AND locked.status = 'Processing'
    RETURNING n.*, wanted.detail
)"""
_PG_ANNOUNCE_DELIVERED = "," + status_events.PG_RECORD_CTE
_PG_LOG_DELIVERED = """
INSERT INTO notification_event (notification_id, kind, at, host, detail)
SELECT id, 'delivered', delivered_at, %s, detail FROM changed
RETURNING notification_id
"""
_PG_MARKING_TYPES = ("uuid[]", "int[]", "text[]", "uuid[]", "timestamp", "timestamp")
_PG_LOGGING_TYPES = ("boolean", "text")
_PG_DELIVERED = Prepared(
    "mark_delivered",
    _PG_MARK_DELIVERED + _PG_ANNOUNCE_DELIVERED + _PG_LOG_DELIVERED,
    _PG_MARKING_TYPES + _PG_LOGGING_TYPES,
)
# With the push notifications' deliveries, those of the rows it marked: by device or not.
_PG_DELIVERED_RECORDING = {
    by_device: Prepared(
        "mark_delivered_recording" + ("_devices" if by_device else ""),
        _PG_MARK_DELIVERED
        + ","
        + deliveries.pg_recording("WHERE notification_id IN (SELECT id FROM changed)", by_device=by_device)
        + _PG_ANNOUNCE_DELIVERED
        + _PG_LOG_DELIVERED,
        _PG_MARKING_TYPES + deliveries.pg_recording_types(by_device=by_device) + _PG_LOGGING_TYPES,
    )
    for by_device in (False, True)
}


def _pg_arrays(seqs: Mapping[Any, int]) -> tuple[list[str], list[int]]:
    return [str(nid) for nid in seqs], list(seqs.values())


def claim(seqs: Mapping[Any, int], *, host: str, lease: float) -> list[Claimed]:
    """Move to Processing each Pending row whose ``message_seq`` is the one given for it.

    ``seqs`` maps notification ids to the message numbers one message carries; the rows returned,
    in due order, are those that message may deliver. The others it is stale or a duplicate for.
    """
    if not seqs:
        return []
    now = utcnow()
    lease_until = now + dt.timedelta(seconds=lease)
    if is_postgres():
        ids, numbers = _pg_arrays(seqs)
        cursor = _PG_CLAIM.execute((ids, numbers, ids, lease_until, host, now))
        # Plain tuples: a model instance per row cost more than the statement.
        data = Notification.data.python_value
        return [Claimed._make((*row[:6], data(row[6]), *row[7:])) for row in cursor.fetchall()]
    claimed: list[Notification] = []
    with db.atomic():
        for notification_id, seq in seqs.items():
            rows = list(
                Notification.update(
                    status=PROCESSING,
                    attempt_count=Notification.attempt_count + 1,
                    lease_until=lease_until,
                    worker_host=host,
                    updated_at=now,
                )
                .where(
                    (Notification.id == notification_id)
                    & (Notification.status == PENDING)
                    & (Notification.message_seq == seq)
                )
                .returning(Notification)
                .execute()
            )
            claimed += rows
        for row in claimed:
            events.record(row.id, "attempt", host, detail=f"attempt {row.attempt_count}", at=now)
    rows = sorted(claimed, key=lambda row: (row.due_at, str(row.id)))
    # Whether the recipients have devices or profiles is left to be looked up (None).
    columns = Claimed._fields[:-2]
    return [
        Claimed._make([str(r.id) if f == "id" else getattr(r, f) for f in columns] + [None, None])
        for r in rows
    ]


def stale(seqs: Mapping[Any, int]) -> list[str]:
    """Of rows a message did not claim, those it is out of date for: sent again, forced or cancelled.

    A row the same message already finished (a retried message) or a duplicate of it is not stale.
    """
    if not seqs:
        return []
    rows = Notification.select(Notification.id, Notification.status, Notification.message_seq).where(
        Notification.id.in_([str(nid) for nid in seqs])
    )
    wanted = {str(nid): seq for nid, seq in seqs.items()}
    return [str(row.id) for row in rows if row.message_seq != wanted[str(row.id)] or row.status == CANCELLED]


def _finish(notification_id: Any, seq: int, **changes: Any) -> bool:
    return bool(
        Notification.update(updated_at=utcnow(), **changes)
        .where(
            (Notification.id == notification_id)
            & (Notification.status == PROCESSING)
            & (Notification.message_seq == seq)
        )
        .execute()
    )


def mark_delivered(
    seqs: Mapping[Any, int],
    *,
    host: str,
    details: Mapping[str, str] | None = None,
    outcomes: Sequence[deliveries.Result] = (),
) -> set[str]:
    """Record rows claimed with these message numbers as delivered; return the ids whose claim still held.

    ``details`` gives some of them a detail for their "delivered" event (the relay that took it).
    ``outcomes`` are their deliveries (push notifications'), written for the rows whose claim held,
    in the same transaction: on PostgreSQL in the same statement.
    """
    if not seqs:
        return set()
    now = utcnow()
    details = details or {}
    if is_postgres():
        ids, numbers = _pg_arrays(seqs)
        texts = [details.get(nid) for nid in ids]
        announce = status_events.enabled()
        if not outcomes:
            cursor = _PG_DELIVERED.execute((ids, numbers, texts, ids, now, now, announce, host))
            return {str(row[0]) for row in cursor.fetchall()}
        statement = _PG_DELIVERED_RECORDING[any(o.device_id is not None for o in outcomes)]
        recording = deliveries.pg_recording_params(outcomes, now, host)
        params = (ids, numbers, texts, ids, now, now, *recording, announce, host)
        return {str(row[0]) for row in statement.execute(params).fetchall()}
    done = set()
    with db.atomic():
        for notification_id, seq in seqs.items():
            if _finish(notification_id, seq, status=DELIVERED, delivered_at=now, lease_until=None):
                done.add(str(notification_id))
        for notification_id in done:
            events.record(notification_id, "delivered", host, detail=details.get(notification_id), at=now)
        deliveries.record([o for o in outcomes if o.notification_id in done], host=host, at=now)
        if done and status_events.enabled():
            status_events.record(Notification.select().where(Notification.id.in_(list(done))))
    return done


def mark_failed(notification_id: Any, seq: int, *, host: str, error: str) -> bool:
    with db.atomic():
        done = _finish(notification_id, seq, status=FAILED, last_error=error, lease_until=None)
        if done:
            events.record(notification_id, "failed", host, detail=error)
            if status_events.enabled():
                status_events.record([get(notification_id)])
    return done


def release_for_retry(notification_id: Any, seq: int, *, host: str, error: str, lease: float) -> bool:
    """Put a row back to Pending for the retry of message ``seq``, which must come within ``lease``."""
    return _release(notification_id, seq, host, "retry", error, lease, last_error=error)


def defer(notification_id: Any, seq: int, *, host: str, reason: str, lease: float) -> bool:
    """Give back a row claimed but not attempted, uncounted, for the retry of message ``seq``."""
    return _release(
        notification_id, seq, host, "deferred", reason, lease, attempt_count=Notification.attempt_count - 1
    )


def _release(
    notification_id: Any, seq: int, host: str, kind: str, detail: str, lease: float, **changes: Any
) -> bool:
    now = utcnow()
    with db.atomic():
        done = _finish(
            notification_id, seq, status=PENDING, lease_until=now + dt.timedelta(seconds=lease), **changes
        )
        if done:
            events.record(notification_id, kind, host, detail=detail, at=now)
    return done


class Replan(NamedTuple):
    """A Pending notification's new due time, for the message number it was read with."""

    seq: int
    due_at: dt.datetime
    appropriate_delivery: bool


def reschedule(plans: Mapping[Any, Replan], *, host: str) -> set[str]:
    """Move Pending, unforced rows to new due times; return the ids moved.

    Each row gets a new message number with no message behind it, so that one already queued for
    it does nothing and the scheduler publishes it again when it falls due.
    """
    now = utcnow()
    moved = set()
    with db.atomic():
        for notification_id, plan in plans.items():
            if (
                Notification.update(
                    due_at=plan.due_at,
                    appropriate_delivery=plan.appropriate_delivery,
                    message_seq=Notification.message_seq + 1,
                    lease_until=None,
                    updated_at=now,
                )
                .where(
                    (Notification.id == notification_id)
                    & (Notification.status == PENDING)
                    & (Notification.message_seq == plan.seq)
                    & (Notification.forced == False)  # noqa: E712  (peewee builds SQL from ==)
                )
                .execute()
            ):
                moved.add(str(notification_id))
        events.record_many(moved, "rescheduled", host, at=now)
    return moved
