"""Time as the database stores it: naive datetimes in UTC."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def to_db(moment: dt.datetime) -> dt.datetime:
    """An aware datetime as the naive UTC value stored in a column."""
    if moment.tzinfo is dt.UTC:  # most are already: no conversion to pay for
        # What replace(tzinfo=None) gives, in a third of its time (its keyword parsing is the cost).
        return dt.datetime.combine(moment.date(), moment.time())
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


def from_db(value: dt.datetime | None) -> dt.datetime | None:
    """A stored naive UTC value as an aware datetime."""
    return None if value is None else value.replace(tzinfo=dt.UTC)
