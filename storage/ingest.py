"""Storing accepted notifications: one at a time through the group commit, many at once through COPY."""

from __future__ import annotations

import datetime as dt
import itertools
import os
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any

import peewee
import psycopg2
from psycopg2.extras import execute_values

from storage.clock import utcnow
from storage.database import db, is_postgres
from storage.group_commit import GroupCommit
from storage.models import PENDING, Notification

_CREATE_COLUMNS = (
    "id", "channel", "recipient_id", "content", "subject", "title", "data", "timezone", "scheduled_time",
    "appropriate_delivery", "due_at", "status", "attempt_count", "attempts_at_force", "forced",
    "message_seq", "api_host", "created_at", "updated_at", "html", "template", "locale", "ttl", "urgency",
    "collapse_key", "category",
)  # fmt: skip

# What a notification starts with, besides what the client sent and when and where it was accepted.
_NEW_ROW = {
    "subject": None, "title": None, "data": None, "category": None, "status": PENDING, "attempt_count": 0,
    "attempts_at_force": 0, "forced": False, "message_seq": 0, "html": None, "template": None,
    "locale": None, "ttl": None, "urgency": None, "collapse_key": None,
}  # fmt: skip

# The API's write of notifications on PostgreSQL, one statement for the rows of many requests.
# A "created" event is the row itself (see queries.history).
_PG_CREATE = f"INSERT INTO notification ({', '.join(_CREATE_COLUMNS)}) VALUES %s"


def _insert_rows(records: Sequence[dict[str, Any]]) -> None:
    """Insert rows from any number of requests in one statement, one transaction."""
    if is_postgres():
        data = Notification.data.db_value
        values = [
            tuple(data(r["data"]) if name == "data" else r[name] for name in _CREATE_COLUMNS) for r in records
        ]
        with peewee.__exception_wrapper__:  # type: ignore[attr-defined]
            execute_values(db.cursor(), _PG_CREATE, values, page_size=len(values))
        return
    with db.atomic():
        Notification.insert_many(records).execute()


# The API's requests, each storing one notification, share their commits (see group_commit).
_group_writer: GroupCommit[dict[str, Any]] = GroupCommit(_insert_rows)


def create(*, host: str, id: str | None = None, **fields: Any) -> str:
    """Store one notification and return its id (``id`` when given, else a new random one).

    It is committed together with those other threads of this process are storing at the same time.
    """
    now = utcnow()
    record = {
        **_NEW_ROW,
        **fields,
        "id": id or new_ids(1)[0],
        "api_host": host,
        "created_at": now,
        "updated_at": now,
    }
    if db.in_transaction():
        # The caller's transaction is its own: others' rows must not commit, or roll back, with it.
        _insert_rows([record])
    else:
        _group_writer.submit(record)
    return str(record["id"])


def create_many(rows: Collection[dict[str, Any]], *, host: str, ids: list[str] | None = None) -> list[str]:
    """Insert many notifications in one transaction, all or none; return their ids in order.

    ``rows`` are read once, in order, as they are stored: on PostgreSQL the first are on their way
    while the later ones are made. Whatever reading them raises stores none and is raised as it is.
    """
    now = utcnow()
    ids = ids or new_ids(len(rows))
    if is_postgres() and not db.in_transaction():
        # One COPY outside a transaction is one of its own, committed when the statement returns:
        # all or none as well, without the round trips of a BEGIN and a COMMIT.
        _pg_copy(ids, rows, host=host, now=now)
        return ids
    with db.atomic():
        if is_postgres():
            _pg_copy(ids, rows, host=host, now=now)
        else:
            # Every row with every column: insert_many takes its columns from the first row.
            new_row = {**_NEW_ROW, "api_host": host, "created_at": now, "updated_at": now}
            Notification.insert_many(
                [{**new_row, **row, "id": nid} for nid, row in zip(ids, rows, strict=True)]
            ).execute()
    return ids


def new_ids(count: int) -> list[str]:
    """``count`` random (version 4) UUIDs as text, from one read of the OS's randomness, not one each."""
    return uuids_of(os.urandom(16 * count))


# A UUID's variant is the top two bits of its 9th byte: 10 (RFC 9562); the rest of that digit is random.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def uuids_of(randomness: bytes) -> list[str]:
    """The version 4 UUIDs made of each 16 bytes, as ``uuid.UUID(bytes=..., version=4)`` makes them.

    Written from the hex digits straight: a ``UUID`` object each cost more than the rest of a row's COPY.
    """
    h = randomness.hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-4{h[i + 13 : i + 16]}-{_VARIANT[h[i + 16]]}{h[i + 17 : i + 20]}-"
        f"{h[i + 20 : i + 32]}"
        for i in range(0, len(h) - 31, 32)
    ]


# COPY's text format: a field is its text with these characters escaped, or \N for NULL.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_NULL = "\\N"


def _copy_text(value: str | None) -> str:
    if value is None:
        return _NULL
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


def _copy_plain(value: object) -> str:
    """A value holding no character to escape: a number, or text of a known alphabet."""
    return _NULL if value is None else str(value)


# The columns a request may leave out, in the order each COPY line writes them.
_OPTIONAL = (
    "subject", "title", "data", "html", "template", "locale", "ttl", "urgency", "collapse_key", "category",
)  # fmt: skip


def _pg_copy(ids: list[str], rows: Iterable[dict[str, Any]], *, host: str, now: dt.datetime) -> None:
    """The rows in one COPY: PostgreSQL parses far less than for an INSERT of as many rows.

    The lines are written as psycopg2 reads them, a few dozen at a time, so that PostgreSQL stores
    the first rows (on another core) while the later ones are made and written.
    """
    source = _Lines(_copy_lines(ids, rows, host=host, now=now))
    with peewee.__exception_wrapper__:  # type: ignore[attr-defined]
        try:
            db.cursor().copy_expert(f"COPY notification ({', '.join(_CREATE_COLUMNS)}) FROM STDIN", source)
        except psycopg2.Error:
            if source.failed is not None:  # psycopg2 says only that the read failed: this is why
                raise source.failed from None
            raise


class _Lines:
    """A file psycopg2's COPY reads, of lines made as it reads; ``failed`` keeps what making them raised."""

    def __init__(self, lines: Iterator[str], per_read: int = 64) -> None:
        self.lines, self.per_read = lines, per_read
        self.failed: BaseException | None = None

    def read(self, size: int = -1) -> str:
        try:
            return "".join(itertools.islice(self.lines, self.per_read))
        except BaseException as exc:
            self.failed = exc
            raise


def _copy_lines(
    ids: list[str], rows: Iterable[dict[str, Any]], *, host: str, now: dt.datetime
) -> Iterator[str]:
    """Each row's COPY line, written for the columns' known types.

    The client's text is escaped, the rest written as it is (a channel, an IANA zone name, numbers,
    naive UTC datetimes, an urgency and a collapse key of the base64url alphabet hold no character
    to escape; a category is escaped all the same, as the client's). A due time that is the time
    asked for (the same value) is written once and copied.
    """
    accepted = f"\t{PENDING}\t0\t0\tf\t0\t{_copy_text(host)}\t{now.isoformat()}\t{now.isoformat()}\t"
    as_json, text, plain = Notification.data.db_value, _copy_text, _copy_plain
    for nid, row in zip(ids, rows, strict=True):
        subject, title, data, html, template, locale, ttl, urgency, collapse_key, category = map(
            row.get, _OPTIONAL
        )
        scheduled, due = row["scheduled_time"], row["due_at"]
        asked = scheduled.isoformat()
        yield (
            f"{nid}\t{row['channel']}\t{text(row['recipient_id'])}\t{text(row['content'])}\t{text(subject)}\t"
            f"{text(title)}\t{_NULL if data is None else text(as_json(data))}\t{row['timezone']}\t{asked}\t"
            f"{'t' if row['appropriate_delivery'] else 'f'}\t{asked if due is scheduled else due.isoformat()}"
            f"{accepted}{text(html)}\t{text(template)}\t{text(locale)}\t{plain(ttl)}\t{plain(urgency)}\t"
            f"{plain(collapse_key)}\t{text(category)}\n"
        )
