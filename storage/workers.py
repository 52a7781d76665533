"""Worker processes as they report themselves: a heartbeat row each, with the messages they hold."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import peewee

from storage.clock import utcnow
from storage.models import WorkerProcess


@dataclass(frozen=True)
class WorkerHost:
    """One host's worker processes for the same queues, summed: a row of the dashboard."""

    host: str
    queues: str
    processes: int
    in_flight: int
    last_seen: dt.datetime


def beat(*, host: str, pid: int, queues: str, in_flight: int, started_at: dt.datetime) -> None:
    """Record that a worker process is alive now, holding ``in_flight`` messages."""
    now = utcnow()
    WorkerProcess.insert(
        id=f"{host}:{pid}",
        host=host,
        queues=queues,
        in_flight=in_flight,
        started_at=started_at,
        last_seen=now,
    ).on_conflict(
        conflict_target=[WorkerProcess.id],
        update={WorkerProcess.in_flight: in_flight, WorkerProcess.last_seen: now},
    ).execute()


def leave(*, host: str, pid: int) -> None:
    """Forget a worker process that stopped cleanly."""
    WorkerProcess.delete().where(WorkerProcess.id == f"{host}:{pid}").execute()


def forget_silent(older_than: dt.timedelta) -> int:
    """Delete rows of processes not seen for ``older_than``: they died without saying so."""
    return WorkerProcess.delete().where(WorkerProcess.last_seen < utcnow() - older_than).execute()


def hosts() -> list[WorkerHost]:
    """Every host and queues with a worker process, most recently seen first."""
    query = (
        WorkerProcess.select(
            WorkerProcess.host,
            WorkerProcess.queues,
            peewee.fn.COUNT(WorkerProcess.id),
            peewee.fn.SUM(WorkerProcess.in_flight),
            peewee.fn.MAX(WorkerProcess.last_seen),
        )
        .group_by(WorkerProcess.host, WorkerProcess.queues)
        .order_by(peewee.fn.MAX(WorkerProcess.last_seen).desc())
        .tuples()
        .execute()  # rows as plain tuples
    )
    return [
        WorkerHost(host, queues, count, int(flying or 0), _as_datetime(seen))
        for host, queues, count, flying, seen in query
    ]


def _as_datetime(value: object) -> dt.datetime:
    # SQLite hands an aggregate of a datetime column back as text.
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
