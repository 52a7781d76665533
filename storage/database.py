"""The one Database object and BaseModel, how an URL becomes a database, and connection lifetimes."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import weakref
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import peewee
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase

import settings

logger = logging.getLogger(__name__)

db = peewee.DatabaseProxy()

# No database to be had: it is away, or every connection of the pool is busy. A connection the server
# dropped raises OperationalError, then InterfaceError at its next use (the rollback, say).
UNAVAILABLE: tuple[type[Exception], ...] = (
    peewee.OperationalError,
    peewee.InterfaceError,
    MaxConnectionsExceeded,
)
# Whatever a database call may raise (peewee makes neither of the last two a DatabaseError).
DATABASE_ERRORS: tuple[type[Exception], ...] = (peewee.DatabaseError, *UNAVAILABLE)


class BaseModel(peewee.Model):
    class Meta:
        database = db
        legacy_table_names = False


# Every web and worker thread keeps a connection of its own (see init_app), and a process may be both
# (the embedded mode); a scheduler and a heartbeat take one each besides.
_POOL_SIZE = settings.WEB_THREADS + settings.WORKER_THREADS + 4


def database_for(url: str) -> peewee.Database:
    """Build the database an URL names: ``sqlite:///path`` or ``postgresql://user@host:port/name``."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path) or ":memory:"
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # WAL lets the API read while a worker writes; busy_timeout makes writers queue, not fail.
        return peewee.SqliteDatabase(
            path,
            pragmas={"busy_timeout": 30000, "journal_mode": "wal", "synchronous": "normal"},
            returning_clause=True,
            timeout=30,
        )
    if parts.scheme in ("postgres", "postgresql"):
        options: dict[str, Any] = dict(parse_qsl(parts.query))
        return PooledPostgresqlDatabase(
            unquote(parts.path.lstrip("/")),
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            host=parts.hostname,
            port=parts.port,
            max_connections=int(options.pop("max_connections", _POOL_SIZE)),
            stale_timeout=300,
            timeout=float(options.pop("pool_timeout", 10)),
            connect_timeout=int(options.pop("connect_timeout", 5)),
            **options,
        )
    raise ValueError(f"unsupported database URL: {url!r}")


def is_postgres() -> bool:
    return isinstance(db.obj, peewee.PostgresqlDatabase)


def ping() -> None:
    """Raise one of ``DATABASE_ERRORS`` when the database cannot answer."""
    with db.connection_context():
        db.execute_sql("SELECT 1")


def wait_until_available(timeout: float) -> bool:
    """Wait, with backoff, until the database answers again; False if it did not within ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        drop_connection()
        try:
            ping()
            return True
        except DATABASE_ERRORS:
            if time.monotonic() + delay > deadline:
                return False
            time.sleep(delay)  # nothing to await but the database itself
            delay = min(delay * 2, 5.0)


def drop_connection() -> None:
    """Close this thread's connection, which an error may have broken; the next query opens anew."""
    with contextlib.suppress(*DATABASE_ERRORS):
        db.close()


def write_transaction() -> Any:
    """A transaction that will write: on SQLite it takes the write lock at BEGIN.

    A deferred SQLite transaction that reads first and writes later cannot wait for a writer that
    came between (busy_timeout does not apply to that upgrade): it fails with "database is locked".
    Taking the lock at BEGIN makes it queue behind the other writer instead.
    """
    if isinstance(db.obj, peewee.SqliteDatabase):
        return db.atomic(lock_type="IMMEDIATE")
    return db.atomic()


class Prepared:
    """A PostgreSQL statement planned once per connection (``PREPARE``), then only executed.

    For the workers' large statements, run once per few notifications: PostgreSQL spent as long
    parsing and planning each of them as running it. ``sql`` takes ``%s`` parameters, each of the
    type of its place in ``types``.
    """

    def __init__(self, name: str, sql: str, types: Sequence[str]) -> None:
        parts = sql.split("%s")
        if len(parts) - 1 != len(types):
            raise ValueError(f"{name}: {len(parts) - 1} parameters, {len(types)} types")
        body = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))
        self.name = name
        self.prepare = f"PREPARE {name} ({', '.join(types)}) AS {body}"
        self.execute_sql = f"EXECUTE {name} ({', '.join(f'%s::{t}' for t in types)})"

    def execute(self, params: Sequence[Any]) -> Any:
        """Run it on this thread's connection, preparing it there first if need be; return the cursor."""
        connection = db.connection()
        names = _prepared.get(connection)
        if names is None:
            names = _prepared[connection] = set()
        if self.name not in names:
            db.execute_sql(self.prepare)
            names.add(self.name)
        return db.execute_sql(self.execute_sql, params)


# The statements prepared on each connection; a new connection (after an outage) has none.
_prepared: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
