"""Scheduler wake-ups: PostgreSQL NOTIFY when a notification falls due soon, and LISTEN to hear it.

Without them a notification due now waits for the scheduler's next pass; with them it is handed
to the broker as soon as the transaction that accepted it commits. SQLite has no equivalent; there
the embedded scheduler is woken in-process.
"""

from __future__ import annotations

import logging
import select
from typing import Any

import peewee

from storage import db, is_postgres

logger = logging.getLogger(__name__)

CHANNEL = "notifications_due"


def notify_due() -> None:
    """Call inside the accepting transaction: listeners hear it when that transaction commits."""
    if is_postgres():
        db.execute_sql(f"NOTIFY {CHANNEL}")


class DueListener:
    """A connection of its own that LISTENs for ``notify_due``, reconnecting after an outage."""

    def __init__(self, database: peewee.PostgresqlDatabase) -> None:
        self.database = database
        self.connection: Any = None

    def _connect(self) -> None:
        import psycopg2

        self.connection = psycopg2.connect(dbname=self.database.database, **self.database.connect_params)
        self.connection.autocommit = True
        with self.connection.cursor() as cursor:
            cursor.execute(f"LISTEN {CHANNEL}")

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a notice; True when one came."""
        import psycopg2

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
    database = db.obj
    return DueListener(database) if isinstance(database, peewee.PostgresqlDatabase) else None
