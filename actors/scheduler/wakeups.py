"""Waking the schedulers when a notification falls due soon, so it need not wait for their next pass.

Schedulers in this process are woken through their events; schedulers anywhere else through a
PostgreSQL NOTIFY, which each hears on a LISTEN connection of its own. SQLite has no equivalent:
there the schedulers are the embedded ones, in this process.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import select
import threading
from collections.abc import Iterable
from typing import Any

import peewee
import psycopg2

import settings
import storage
from storage.clock import utcnow

logger = logging.getLogger(__name__)

CHANNEL = "notifications_due"

# Events of the schedulers running in this process, set to make them look at the database now.
_events: set[threading.Event] = set()


def register(event: threading.Event) -> None:
    _events.add(event)


def unregister(event: threading.Event) -> None:
    _events.discard(event)


def wake(due_times: Iterable[dt.datetime]) -> bool:
    """After storing notifications due at ``due_times`` (naive UTC): wake the schedulers if any is
    due within the schedule horizon, which they would otherwise reach only at their next pass.
    Return whether they were woken."""
    horizon = utcnow() + dt.timedelta(seconds=settings.SCHEDULE_HORIZON)
    if not any(due_at <= horizon for due_at in due_times):
        return False
    wake_now()
    return True


def wake_now() -> None:
    """Wake every scheduler: this process's at once, the others' through the database."""
    for event in list(_events):
        event.set()
    if storage.is_postgres():
        _notifier().notify()


class _Notifier:
    """A thread that sends the NOTIFY, so that a request does not wait for one more round trip.

    Wake-ups asked for while one is being sent are sent as one: schedulers need to hear only that
    something new is due, not how many times.
    """

    def __init__(self) -> None:
        self._asked = threading.Event()
        self.pid = os.getpid()
        threading.Thread(target=self._run, name="scheduler-wakeups", daemon=True).start()

    def notify(self) -> None:
        self._asked.set()

    def _run(self) -> None:
        while True:
            self._asked.wait()
            self._asked.clear()
            try:
                storage.db.connect(reuse_if_open=True)
                storage.db.execute_sql(f"NOTIFY {CHANNEL}")
            except storage.DATABASE_ERRORS as exc:
                # The schedulers' next pass finds the notification anyway, only later.
                logger.warning("Could not wake the schedulers: %s", exc)
                storage.drop_connection()


_notifier_lock = threading.Lock()
_current: _Notifier | None = None


def _notifier() -> _Notifier:
    global _current
    with _notifier_lock:
        # A forked process (a gunicorn worker) inherits the object but not its thread.
        if _current is None or _current.pid != os.getpid():
            _current = _Notifier()
        return _current


class DueListener:
    """A connection of its own that LISTENs for wake-ups, reconnecting after an outage."""

    def __init__(self, database: peewee.PostgresqlDatabase) -> None:
        self.database = database
        self.connection: Any = None

    def _connect(self) -> None:
        self.connection = psycopg2.connect(dbname=self.database.database, **self.database.connect_params)
        self.connection.autocommit = True
        with self.connection.cursor() as cursor:
            cursor.execute(f"LISTEN {CHANNEL}")

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a notice; True when one came."""
        try:
            if self.connection is None:
                self._connect()
            if not self.connection.notifies:
                select.select([self.connection], [], [], timeout)
            self.connection.poll()
        except (psycopg2.Error, OSError) as exc:
            logger.warning("Lost the scheduler's LISTEN connection: %s", exc)
            self.close()
            return False
        heard = bool(self.connection.notifies)
        self.connection.notifies.clear()
        return heard

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def listener() -> DueListener | None:
    """A listener on the configured database, or None where the database cannot notify."""
    database = storage.db.obj
    return DueListener(database) if isinstance(database, peewee.PostgresqlDatabase) else None
