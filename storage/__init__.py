"""Storage: the database, its tables, and the queries and state transitions on them.

``database`` holds the one Database object; ``models`` the tables; ``schema`` their migrations;
``ingest`` stores accepted notifications, ``transitions`` moves them between states, ``queries``
reads them and ``schedule`` is the schedulers' side. Nothing here imports Flask or Dramatiq.
"""

from __future__ import annotations

from typing import Any

import peewee

from storage import schema
from storage.database import (
    DATABASE_ERRORS,
    UNAVAILABLE,
    BaseModel,
    database_for,
    db,
    drop_connection,
    is_postgres,
    ping,
    wait_until_available,
    write_transaction,
)

__all__ = [
    "DATABASE_ERRORS",
    "UNAVAILABLE",
    "BaseModel",
    "configure",
    "database_for",
    "db",
    "drop_connection",
    "init_app",
    "is_postgres",
    "ping",
    "wait_until_available",
    "write_transaction",
]


def configure(url: str) -> peewee.Database:
    """Point the shared ``db`` at the database ``url`` names and make sure its schema is current."""
    if isinstance(db.obj, peewee.Database) and not db.obj.is_closed():
        db.obj.close()
    database = database_for(url)
    db.initialize(database)
    schema.migrate(database)
    return database


def init_app(app: Any) -> None:
    """Configure the database; each serving thread opens a connection on first use and keeps it.

    Keeping it matters: peewee opens and closes connections under one lock for the whole
    database, so a connection per request would queue every request thread behind that lock.
    """
    configure(app.config["DATABASE_URL"])

    @app.teardown_request
    def _drop_if_broken(exc: BaseException | None) -> None:
        if exc is not None:
            drop_connection()
