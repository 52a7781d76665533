"""The Notification model, its state transitions as conditional UPDATEs, and the queries on it.

Every transition is one statement whose WHERE clause holds the precondition, so that of two racing
processes (a worker claiming, a client cancelling) exactly one wins, without a read-then-write.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import peewee
from psycopg2.extras import execute_values

from storage import BaseModel, db, events, is_postgres, wakeups
from storage.clock import utcnow
from storage.group_commit import GroupCommit

PENDING, PROCESSING, DELIVERED, FAILED, CANCELLED = (
    "Pending",
    "Processing",
    "Delivered",
    "Failed",
    "Cancelled",
)
STATUSES = (PENDING, PROCESSING, DELIVERED, FAILED, CANCELLED)
CHANNELS = ("push", "email")


class JSONField(peewee.TextField):
    """A JSON document kept as text, so that SQLite and PostgreSQL store it alike."""

    def db_value(self, value: Any) -> str | None:
        import json

        return None if value is None else json.dumps(value, separators=(",", ":"))

    def python_value(self, value: Any) -> Any:
        import json

        return None if value is None else json.loads(value)


class Notification(BaseModel):
    id = peewee.UUIDField(primary_key=True, default=uuid.uuid4)
    channel = peewee.CharField(max_length=8)
    recipient_id = peewee.CharField(max_length=320)
    content = peewee.TextField()
    subject = peewee.CharField(max_length=998, null=True)
    title = peewee.CharField(max_length=255, null=True)
    data = JSONField(null=True)
    timezone = peewee.CharField(max_length=64)
    # The instant the client asked for, and the instant it is due (moved into appropriate hours).
    scheduled_time = peewee.DateTimeField()
    appropriate_delivery = peewee.BooleanField()
    due_at = peewee.DateTimeField()
    status = peewee.CharField(max_length=12, default=PENDING)
    attempt_count = peewee.IntegerField(default=0)
    # Attempts made before the last force; the retry budget starts again from there.
    attempts_at_force = peewee.IntegerField(default=0)
    forced = peewee.BooleanField(default=False)
    last_error = peewee.TextField(null=True)
    # Bumped each time a message is published for the row; only a message carrying the current
    # value may claim it, which turns every older or duplicate message into a no-op.
    dispatch_seq = peewee.IntegerField(default=0)
    # Until when the queued message (Pending) or the claiming worker (Processing) owns the row.
    lease_until = peewee.DateTimeField(null=True)
    api_host = peewee.CharField(max_length=255)
    worker_host = peewee.CharField(max_length=255, null=True)
    created_at = peewee.DateTimeField()
    updated_at = peewee.DateTimeField()
    delivered_at = peewee.DateTimeField(null=True)

    class Meta:
        indexes = (
            (("created_at",), False),
            (("recipient_id", "created_at"), False),
            (("updated_at",), False),
        )


class NotificationNotFound(LookupError):
    """No notification has that id."""


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


# Claimed's columns, in its order; the id as text, as every caller wants it.
_CLAIMED_COLUMNS = "n.id::text, " + ", ".join(f"n.{name}" for name in Claimed._fields[1:])


_CREATE_COLUMNS = (
    "id", "channel", "recipient_id", "content", "subject", "title", "data", "timezone", "scheduled_time",
    "appropriate_delivery", "due_at", "status", "attempt_count", "attempts_at_force", "forced",
    "dispatch_seq", "api_host", "created_at", "updated_at",
)  # fmt: skip

# What a notification starts with, besides what the client sent and when and where it was accepted.
_ACCEPTED = {
    "subject": None, "title": None, "data": None, "status": PENDING, "attempt_count": 0,
    "attempts_at_force": 0, "forced": False, "dispatch_seq": 0,
}  # fmt: skip

# The API's write of notifications on PostgreSQL: the rows, sent with the schedulers' NOTIFY as one
# round trip and one transaction. A "created" event is the row itself (see events.history).
_PG_CREATE = f"INSERT INTO notification ({', '.join(_CREATE_COLUMNS)}) VALUES %s"


@dataclass(frozen=True, slots=True)
class _Accepted:
    """A notification handed to the group writer: every column of its row, and whether to wake."""

    record: dict[str, Any]
    wake: bool


def _insert_accepted(accepted: Sequence[_Accepted]) -> None:
    """Insert rows from any number of requests in one statement, one transaction."""
    records = [a.record for a in accepted]
    wake = any(a.wake for a in accepted)
    if is_postgres():
        data = Notification.data.db_value
        values = [
            tuple(data(r["data"]) if name == "data" else r[name] for name in _CREATE_COLUMNS) for r in records
        ]
        sql = _PG_CREATE + (f"; NOTIFY {wakeups.CHANNEL}" if wake else "")
        with peewee.__exception_wrapper__:  # type: ignore[attr-defined]
            execute_values(db.cursor(), sql, values, page_size=len(values))
        return
    with db.atomic():
        Notification.insert_many(records).execute()
        if wake:
            wakeups.notify_due()


# The API's requests, each storing one notification, share their commits (see group_commit).
_accepting: GroupCommit[_Accepted] = GroupCommit(_insert_accepted)


def create(*, host: str, wake: bool = False, **fields: Any) -> str:
    """Store one notification and return its id; ``wake`` tells schedulers at commit that it falls due soon.

    It is committed together with those other threads of this process are storing at the same time.
    """
    now = utcnow()
    record = {
        **_ACCEPTED,
        **fields,
        "id": _random_ids(1)[0],
        "api_host": host,
        "created_at": now,
        "updated_at": now,
    }
    accepted = _Accepted(record, wake)
    if db.in_transaction():
        # The caller's transaction is its own: others' rows must not commit, or roll back, with it.
        _insert_accepted([accepted])
    else:
        _accepting.submit(accepted)
    return record["id"]


def create_many(rows: list[dict[str, Any]], *, host: str, wake: bool = False) -> list[str]:
    """Insert many notifications in one transaction, all or none; return their ids in order."""
    now = utcnow()
    ids = _random_ids(len(rows))
    with db.atomic():
        if is_postgres():
            _pg_copy(ids, rows, host=host, now=now)
        else:
            # Every row with every column: insert_many takes its columns from the first row.
            accepted = {**_ACCEPTED, "api_host": host, "created_at": now, "updated_at": now}
            Notification.insert_many(
                [{**accepted, **row, "id": nid} for nid, row in zip(ids, rows, strict=True)]
            ).execute()
        if wake:
            wakeups.notify_due()
    return ids


def _random_ids(count: int) -> list[str]:
    """``count`` random (version 4) UUIDs as text, from one read of the OS's randomness, not one each."""
    randomness = os.urandom(16 * count)
    return [str(uuid.UUID(bytes=randomness[i : i + 16], version=4)) for i in range(0, 16 * count, 16)]


# COPY's text format: a field is its text with these characters escaped, or \N for NULL.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str | None) -> str:
    if value is None:
        return "\\N"
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


def _pg_copy(ids: list[str], rows: list[dict[str, Any]], *, host: str, now: dt.datetime) -> None:
    """The rows in one COPY: PostgreSQL parses far less than for an INSERT of as many rows.

    Each line is written for the columns' known types: the client's text escaped, the rest as it is
    (a channel, an IANA zone name, numbers and naive UTC datetimes hold no character to escape).
    """
    accepted = f"\t{PENDING}\t0\t0\tf\t0\t{_copy_text(host)}\t{now}\t{now}\n"
    data = Notification.data.db_value
    lines = [
        f"{nid}\t{row['channel']}\t{_copy_text(row['recipient_id'])}\t{_copy_text(row['content'])}\t"
        f"{_copy_text(row.get('subject'))}\t{_copy_text(row.get('title'))}\t"
        f"{_copy_text(data(row.get('data')))}\t{row['timezone']}\t{row['scheduled_time']}\t"
        f"{'t' if row['appropriate_delivery'] else 'f'}\t{row['due_at']}{accepted}"
        for nid, row in zip(ids, rows, strict=True)
    ]
    with peewee.__exception_wrapper__:  # type: ignore[attr-defined]
        db.cursor().copy_expert(
            f"COPY notification ({', '.join(_CREATE_COLUMNS)}) FROM STDIN", io.StringIO("".join(lines))
        )


def get(notification_id: Any) -> Notification:
    try:
        return Notification.get_by_id(notification_id)
    except peewee.DoesNotExist:
        raise NotificationNotFound(str(notification_id)) from None


def listing(
    *, status: str | None = None, channel: str | None = None, recipient_id: str | None = None
) -> peewee.ModelSelect[Notification]:
    """Notifications matching the filters, newest first."""
    query = Notification.select().order_by(Notification.created_at.desc(), Notification.id.desc())
    if status:
        query = query.where(Notification.status == status)
    if channel:
        query = query.where(Notification.channel == channel)
    if recipient_id:
        query = query.where(Notification.recipient_id == recipient_id)
    return query


def _conflict_or_missing(notification_id: Any, action: str, allowed: Iterable[str]) -> TransitionConflict:
    return TransitionConflict(action, get(notification_id).status, allowed)


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
    return rows[0]


def force(notification_id: Any, *, host: str, lease: float) -> Notification:
    """Make a Pending or Failed notification due now; the caller publishes its new dispatch."""
    now = utcnow()
    with db.atomic():
        rows = list(
            Notification.update(
                status=PENDING,
                due_at=now,
                forced=True,
                attempts_at_force=Notification.attempt_count,
                dispatch_seq=Notification.dispatch_seq + 1,
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
# once. Every statement that changes many rows locks them in id order first, so that two of them
# racing over the same rows queue rather than deadlock.
# Rows are looked up by id alone, then checked: a condition on ``status`` would let the planner
# scan a status index instead, which its statistics, stale after a bulk load, can make look cheap
# (it then reads every Pending row for each statement).
_PG_CLAIM = f"""
WITH wanted AS (
    SELECT * FROM unnest(%s::uuid[], %s::int[]) AS w(id, seq)
), locked AS (
    SELECT id, status, dispatch_seq FROM notification WHERE id = ANY(%s::uuid[])
    ORDER BY id
    FOR UPDATE
), claimed AS (
    UPDATE notification n
    SET status = 'Processing', attempt_count = n.attempt_count + 1, lease_until = %s, worker_host = %s,
        updated_at = %s
    FROM locked JOIN wanted ON locked.id = wanted.id
    WHERE n.id = locked.id AND locked.status = 'Pending' AND locked.dispatch_seq = wanted.seq
    RETURNING n.*
), logged AS (
    INSERT INTO notification_event (notification_id, kind, at, host, detail)
    SELECT id, 'attempt', updated_at, worker_host, 'attempt ' || attempt_count FROM claimed
)
SELECT {_CLAIMED_COLUMNS} FROM claimed n ORDER BY n.due_at, n.id
"""

_PG_DELIVERED = """
WITH wanted AS (
    SELECT * FROM unnest(%s::uuid[], %s::int[]) AS w(id, seq)
), locked AS (
    SELECT id, status, dispatch_seq FROM notification WHERE id = ANY(%s::uuid[])
    ORDER BY id
    FOR UPDATE
), delivered AS (
    UPDATE notification n
    SET status = 'Delivered', delivered_at = %s, lease_until = NULL, updated_at = %s
    FROM locked JOIN wanted ON locked.id = wanted.id AND locked.dispatch_seq = wanted.seq
    WHERE n.id = locked.id AND locked.status = 'Processing'
    RETURNING n.id, n.delivered_at
)
INSERT INTO notification_event (notification_id, kind, at, host)
SELECT id, 'delivered', delivered_at, %s FROM delivered
RETURNING notification_id
"""


def _pg_arrays(dispatches: Mapping[Any, int]) -> tuple[list[str], list[int]]:
    return [str(nid) for nid in dispatches], list(dispatches.values())


def claim(dispatches: Mapping[Any, int], *, host: str, lease: float) -> list[Claimed]:
    """Move to Processing each Pending row whose ``dispatch_seq`` is the one given for it.

    ``dispatches`` maps notification ids to the dispatch numbers of one message; the rows returned,
    in due order, are those that message may deliver. The others it is stale or a duplicate for.
    """
    if not dispatches:
        return []
    now = utcnow()
    lease_until = now + dt.timedelta(seconds=lease)
    if is_postgres():
        ids, seqs = _pg_arrays(dispatches)
        cursor = db.execute_sql(_PG_CLAIM, (ids, seqs, ids, lease_until, host, now))
        # Plain tuples: a model instance per row cost more than the statement.
        data = Notification.data.python_value
        return [Claimed._make((*row[:6], data(row[6]), *row[7:])) for row in cursor.fetchall()]
    claimed: list[Notification] = []
    with db.atomic():
        for notification_id, seq in dispatches.items():
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
                    & (Notification.dispatch_seq == seq)
                )
                .returning(Notification)
                .execute()
            )
            claimed += rows
        for row in claimed:
            events.record(row.id, "attempt", host, detail=f"attempt {row.attempt_count}", at=now)
    rows = sorted(claimed, key=lambda row: (row.due_at, str(row.id)))
    return [Claimed._make(str(r.id) if f == "id" else getattr(r, f) for f in Claimed._fields) for r in rows]


def stale(dispatches: Mapping[Any, int]) -> list[str]:
    """Of rows a message did not claim, those it is out of date for: re-dispatched, forced or cancelled.

    A row the same message already finished (a retried message) or a duplicate of it is not stale.
    """
    if not dispatches:
        return []
    rows = Notification.select(Notification.id, Notification.status, Notification.dispatch_seq).where(
        Notification.id.in_([str(nid) for nid in dispatches])
    )
    wanted = {str(nid): seq for nid, seq in dispatches.items()}
    return [str(row.id) for row in rows if row.dispatch_seq != wanted[str(row.id)] or row.status == CANCELLED]


def _finish(notification_id: Any, seq: int, **changes: Any) -> bool:
    return bool(
        Notification.update(updated_at=utcnow(), **changes)
        .where(
            (Notification.id == notification_id)
            & (Notification.status == PROCESSING)
            & (Notification.dispatch_seq == seq)
        )
        .execute()
    )


def mark_delivered(dispatches: Mapping[Any, int], *, host: str) -> set[str]:
    """Record rows claimed by these dispatches as delivered; return the ids whose claim still held."""
    if not dispatches:
        return set()
    now = utcnow()
    if is_postgres():
        ids, seqs = _pg_arrays(dispatches)
        cursor = db.execute_sql(_PG_DELIVERED, (ids, seqs, ids, now, now, host))
        return {str(row[0]) for row in cursor.fetchall()}
    done = set()
    with db.atomic():
        for notification_id, seq in dispatches.items():
            if _finish(notification_id, seq, status=DELIVERED, delivered_at=now, lease_until=None):
                done.add(str(notification_id))
        events.record_many(done, "delivered", host, at=now)
    return done


def mark_failed(notification_id: Any, seq: int, *, host: str, error: str) -> bool:
    with db.atomic():
        done = _finish(notification_id, seq, status=FAILED, last_error=error, lease_until=None)
        if done:
            events.record(notification_id, "failed", host, detail=error)
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
