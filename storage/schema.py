"""Schema creation and migrations, applied at start-up, safe when several processes start at once."""

from __future__ import annotations

import logging
from collections.abc import Callable

import peewee

from storage.models import (
    Delivery,
    Device,
    IdempotentRequest,
    Notification,
    NotificationEvent,
    RateLimitWindow,
    Recipient,
    SchedulerPass,
    StatusEvent,
    Template,
    WorkerProcess,
)

logger = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every process of this service.
_MIGRATION_LOCK_KEY = 7_310_420_177


class SchemaVersion(peewee.Model):
    version = peewee.IntegerField(primary_key=True)

    class Meta:
        table_name = "schema_version"


def _create_v1(database: peewee.Database) -> None:
    database.create_tables([Notification, NotificationEvent], safe=True)


def _add_worker_processes(database: peewee.Database) -> None:
    database.create_tables([WorkerProcess], safe=True)
    # Counts by status and channel, the schedule per channel and a queue's page, read from the index.
    database.execute_sql(
        "CREATE INDEX IF NOT EXISTS notification_status_channel_due_at"
        " ON notification (status, channel, due_at)"
    )


def _add_request_guards(database: peewee.Database) -> None:
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


def _add_scheduler_passes(database: peewee.Database) -> None:
    database.create_tables([SchedulerPass], safe=True)
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


def _name_the_message_numbers(database: peewee.Database) -> None:
    # "dispatch" named several things; the number is the row's broker message's, and a pass is a
    # scheduler's. A database created at version 1 or 5 from the current models has the new names.
    _rename_column(database, "notification", "dispatch_seq", "message_seq")
    database.create_tables([SchedulerPass], safe=True)
    if database.table_exists("dispatch_pass"):
        # Passes in flight when the service stopped: their rows are handed back by the next start.
        database.execute_sql(
            "INSERT INTO scheduler_pass (id, seqs, lease_until)"
            " SELECT id, dispatches, lease_until FROM dispatch_pass"
        )
        database.execute_sql("DROP TABLE dispatch_pass")


def _add_html_part(database: peewee.Database) -> None:
    # A database created from the current models already has the column.
    _add_column(database, "notification", "html", "TEXT NULL")


def _add_templates(database: peewee.Database) -> None:
    database.create_tables([Template], safe=True)
    _add_column(database, "notification", "template", "VARCHAR(100) NULL")
    _add_column(database, "notification", "locale", "VARCHAR(35) NULL")


def _add_column(database: peewee.Database, table: str, column: str, definition: str) -> None:
    if column not in {c.name for c in database.get_columns(table)}:
        database.execute_sql(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


def _add_devices(database: peewee.Database) -> None:
    # Recipients' devices, each notification's deliveries to them, and a push notification's TTL,
    # urgency and collapse key (present already in a database created at version 1 from these models).
    database.create_tables([Device, Delivery], safe=True)
    _add_column(database, "notification", "ttl", "INTEGER")
    _add_column(database, "notification", "urgency", "VARCHAR(8)")
    _add_column(database, "notification", "collapse_key", "VARCHAR(32)")


def _add_recipients(database: peewee.Database) -> None:
    database.create_tables([Recipient], safe=True)
    _add_column(database, "notification", "category", "VARCHAR(64) NULL")


def _add_status_events(database: peewee.Database) -> None:
    database.create_tables([StatusEvent], safe=True)


def _rename_column(database: peewee.Database, table: str, old: str, new: str) -> None:
    if old in {column.name for column in database.get_columns(table)}:
        database.execute_sql(f"ALTER TABLE {table} RENAME COLUMN {old} TO {new}")


# Append only: each entry brings the schema from its index to its index + 1.
MIGRATIONS: list[Callable[[peewee.Database], None]] = [
    _create_v1,
    _add_worker_processes,
    _add_request_guards,
    _index_the_scheduler_queries,
    _add_scheduler_passes,
    _name_the_message_numbers,
    _add_html_part,
    _add_templates,
    _add_devices,
    _add_recipients,
    _add_status_events,
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
