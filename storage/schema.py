"""Schema creation and migrations, applied at start-up, safe when several processes start at once."""

from __future__ import annotations

import logging
from collections.abc import Callable

import peewee

logger = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every process of this service.
_MIGRATION_LOCK_KEY = 7_310_420_177


class SchemaVersion(peewee.Model):
    version = peewee.IntegerField(primary_key=True)

    class Meta:
        table_name = "schema_version"


def _create_v1(database: peewee.Database) -> None:
    from storage.events import NotificationEvent
    from storage.notifications import Notification

    database.create_tables([Notification, NotificationEvent], safe=True)


def _add_worker_processes(database: peewee.Database) -> None:
    from storage.workers import WorkerProcess

    database.create_tables([WorkerProcess], safe=True)
    # Counts by status and channel, the schedule per channel and a queue's page, read from the index.
    database.execute_sql(
        "CREATE INDEX IF NOT EXISTS notification_status_channel_due_at"
        " ON notification (status, channel, due_at)"
    )


def _add_request_guards(database: peewee.Database) -> None:
    from storage.idempotency import IdempotentRequest
    from storage.ratelimit import RateLimitWindow

    database.create_tables([IdempotentRequest, RateLimitWindow], safe=True)


def _index_the_scheduler_queries(database: peewee.Database) -> None:
    # What the scheduler takes: rows never dispatched, in due order, and rows whose lease lapsed.
    # Partial, so that neither reads the rows already handed to the broker, however many are due.
    database.execute_sql(
        "CREATE INDEX IF NOT EXISTS notification_undispatched ON notification (channel, due_at)"
        " WHERE status = 'Pending' AND lease_until IS NULL"
    )
    database.execute_sql(
        "CREATE INDEX IF NOT EXISTS notification_leased ON notification (lease_until)"
        " WHERE lease_until IS NOT NULL"
    )


def _add_dispatch_passes(database: peewee.Database) -> None:
    from storage.dispatching import DispatchPass

    database.create_tables([DispatchPass], safe=True)
    # (status, channel, due_at) serves every query (status, due_at) did, and each index is written
    # again by every one of a notification's transitions.
    database.execute_sql("DROP INDEX IF EXISTS notification_status_due_at")
    if isinstance(database, peewee.PostgresqlDatabase):
        # Each notification leaves four dead row versions behind it, and the scheduler's and the
        # workers' lookups step over them until a vacuum: vacuum the table when 2% of it is dead,
        # not PostgreSQL's default 20% (a queue table's usual setting).
        database.execute_sql(
            "ALTER TABLE notification SET (autovacuum_vacuum_scale_factor = 0.02,"
            " autovacuum_analyze_scale_factor = 0.02)"
        )


# Append only: each entry brings the schema from its index to its index + 1.
MIGRATIONS: list[Callable[[peewee.Database], None]] = [
    _create_v1,
    _add_worker_processes,
    _add_request_guards,
    _index_the_scheduler_queries,
    _add_dispatch_passes,
]


def migrate(database: peewee.Database) -> int:
    """Bring the schema to the newest version; return the version it is at."""
    with database.bind_ctx([SchemaVersion]), database.connection_context():
        # IMMEDIATE: an SQLite reader cannot later upgrade to a writer if another process wrote first.
        options = {"lock_type": "IMMEDIATE"} if isinstance(database, peewee.SqliteDatabase) else {}
        with database.atomic(**options):
            _lock(database)
            database.create_tables([SchemaVersion], safe=True)
            current = SchemaVersion.select(peewee.fn.MAX(SchemaVersion.version)).scalar() or 0
            for version in range(current, len(MIGRATIONS)):
                logger.info("Migrating schema to version %d", version + 1)
                MIGRATIONS[version](database)
                SchemaVersion.create(version=version + 1)
        return len(MIGRATIONS)


def _lock(database: peewee.Database) -> None:
    """Serialise concurrent start-ups: only one process at a time may look at or change the schema."""
    if isinstance(database, peewee.PostgresqlDatabase):
        database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
    # SQLite: the IMMEDIATE transaction already holds the database's write lock.
