"""The schedulers' queries: due rows taken for publishing, and the passes publishing them.

A pass takes due rows with one UPDATE that gives each a new ``message_seq`` and the lease of its
message, and records itself in ``scheduler_pass`` in the same transaction; it commits, publishes,
then deletes its record and hands back what it could not publish. A scheduler that dies between
commit and publish leaves its record behind: once the record's short lease runs out, any scheduler
hands those rows back (``undo_abandoned_passes``), so they wait seconds, not the message's lease.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import peewee

from storage import events
from storage.clock import utcnow
from storage.database import db, is_postgres
from storage.models import CHANNELS, PENDING, Notification, SchedulerPass


@dataclass(frozen=True)
class Publication:
    """A row taken for the broker: publish ``deliver({notification_id: seq})`` due at ``due_at``."""

    notification_id: str
    channel: str
    due_at: dt.datetime
    seq: int


def take_due(
    *,
    horizon: float,
    lease: float,
    limit: int,
    channels: Iterable[str] | None = None,
    lapsed: bool = True,
) -> list[Publication]:
    """Take up to ``limit`` rows per channel due within ``horizon`` seconds that nobody owns.

    With ``lapsed``, first rows whose queued message or worker lease ran out. Each row taken gets
    a new ``message_seq`` and is owned for ``lease`` seconds by the message to be published.
    """
    now = utcnow()
    taken: list[Publication] = []
    if lapsed:
        # The lapsed first: they are late already. Each query reads only the rows it may take,
        # through an index of its own, never the whole due backlog. Only Pending and Processing rows
        # hold a lease (every other transition clears it), so the lapsed need no status condition,
        # which would let the planner read a status index instead.
        expired = Notification.lease_until < now
        taken = _take(expired, Notification.lease_until, now=now, lease=lease, limit=limit, channels=channels)
    due = (Notification.status == PENDING) & (Notification.due_at <= now + dt.timedelta(seconds=horizon))
    unowned = due & Notification.lease_until.is_null()
    # A channel at a time, each read in due order from the index, up to ``limit`` each.
    for channel in sorted(CHANNELS if channels is None else channels):
        room = limit - sum(1 for d in taken if d.channel == channel)
        if room > 0:
            taken += _take(unowned, Notification.due_at, now=now, lease=lease, limit=room, channels=[channel])
    return taken


def _take(
    which: peewee.Expression,
    order: peewee.Field,
    *,
    now: dt.datetime,
    lease: float,
    limit: int,
    channels: Iterable[str] | None,
) -> list[Publication]:
    candidates = Notification.select(Notification.id).where(which).order_by(order).limit(limit)
    if channels is not None:
        candidates = candidates.where(Notification.channel.in_(list(channels)))
    if is_postgres():
        # Several schedulers may run at once; each takes rows the others have not locked.
        candidates = candidates.for_update(skip_locked=True)
    query = (
        Notification.update(
            status=PENDING,
            message_seq=Notification.message_seq + 1,
            lease_until=now + dt.timedelta(seconds=lease),
            updated_at=now,
        )
        .where(Notification.id.in_(candidates))
        .returning(Notification.id, Notification.channel, Notification.due_at, Notification.message_seq)
    )
    # On PostgreSQL the rows as psycopg2 gives them (the types wanted already): peewee's conversion
    # of each of a pass's hundreds of rows cost the scheduler more than the statement.
    rows = db.execute_sql(*query.sql()).fetchall() if is_postgres() else list(query.tuples().execute())
    return [Publication(str(nid), channel, due_at, seq) for nid, channel, due_at, seq in rows]


def begin_pass(taken: list[Publication], *, lease: float) -> int | None:
    """Record, in the transaction that took them, the rows a pass is about to publish."""
    if not taken:
        return None
    record = {p.notification_id: p.seq for p in taken}
    until = utcnow() + dt.timedelta(seconds=lease)
    return SchedulerPass.insert(seqs=record, lease_until=until).execute()


def finish_pass(
    pass_id: int | None, *, published: list[Publication], unpublished: list[Publication], host: str
) -> None:
    """The pass is over: forget its record, log what was queued, hand back what was not published."""
    if pass_id is not None:
        SchedulerPass.delete().where(SchedulerPass.id == pass_id).execute()
    if published:
        events.record_many([d.notification_id for d in published], "queued", host)
    release({d.notification_id: d.seq for d in unpublished})


def undo_abandoned_passes() -> int:
    """Hand back the rows of passes whose scheduler died before finishing them; return how many."""
    now = utcnow()
    abandoned = SchedulerPass.select().where(SchedulerPass.lease_until < now)
    if is_postgres():
        abandoned = abandoned.for_update(skip_locked=True)
    rows: dict[str, int] = {}
    ids = []
    for record in abandoned:
        rows.update(record.seqs)
        ids.append(record.id)
    if not ids:
        return 0
    SchedulerPass.delete().where(SchedulerPass.id.in_(ids)).execute()
    return release(rows)


# Looked up by id and locked in id order, as workers' claims lock them, so that the two queue
# rather than deadlock; then checked: a row is handed back only as the pass left it.
_PG_RELEASE = """
WITH wanted AS (
    SELECT * FROM unnest(%s::uuid[], %s::int[]) AS w(id, seq)
), locked AS (
    SELECT id, status, message_seq FROM notification WHERE id = ANY(%s::uuid[]) ORDER BY id FOR UPDATE
)
UPDATE notification n SET lease_until = NULL
FROM locked JOIN wanted ON locked.id = wanted.id AND locked.message_seq = wanted.seq
WHERE n.id = locked.id AND locked.status = 'Pending'
"""


def release(seqs: Mapping[Any, int]) -> int:
    """Hand back to the next pass the rows still Pending with these message numbers: nothing was sent."""
    if not seqs:
        return 0
    if is_postgres():
        ids, numbers = [str(nid) for nid in seqs], list(seqs.values())
        return db.execute_sql(_PG_RELEASE, (ids, numbers, ids)).rowcount
    released = 0
    for notification_id, seq in seqs.items():
        released += (
            Notification.update(lease_until=None)
            .where(
                (Notification.id == notification_id)
                & (Notification.status == PENDING)
                & (Notification.message_seq == seq)
            )
            .execute()
        )
    return released


def release_all() -> int:
    """Forget every queued message of Pending rows, for a restart that lost its in-process broker."""
    with db.connection_context(), db.atomic():
        SchedulerPass.delete().execute()
        return (
            Notification.update(lease_until=None)
            .where((Notification.status == PENDING) & Notification.lease_until.is_null(False))
            .execute()
        )
