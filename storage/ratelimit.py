"""Request counters per client and fixed time window, shared by every process through the database."""

from __future__ import annotations

from storage.database import db, is_postgres
from storage.models import RateLimitWindow

# The same upsert, committed without waiting for the WAL to reach the disk: every request of a key
# updates one row, and a synchronous commit holds that row's lock through an fsync, so the key's
# requests queued behind each other's flushes. A crash of the database may forget the last few
# counts, which lets a few more requests through in that window; it cannot lose a notification.
_PG_HIT = """
INSERT INTO rate_limit_window (client, "window", count)
SELECT %s, %s, 1 FROM (SELECT set_config('synchronous_commit', 'off', true)) AS asynchronous_commit
ON CONFLICT (client, "window") DO UPDATE SET count = rate_limit_window.count + 1
RETURNING count
"""


def hit(client: str, window: int) -> int:
    """Count one request of ``client`` in ``window`` and return how many it has made there so far.

    One upsert, so that concurrent requests in any number of processes each see their own count.
    """
    # Only as a statement of its own: inside a transaction the setting would cover its other writes.
    if is_postgres() and not db.in_transaction():
        return db.execute_sql(_PG_HIT, (client, window)).fetchone()[0]
    return (
        RateLimitWindow.insert(client=client, window=window, count=1)
        .on_conflict(
            conflict_target=[RateLimitWindow.client, RateLimitWindow.window],
            update={RateLimitWindow.count: RateLimitWindow.count + 1},
        )
        .returning(RateLimitWindow.count)
        .tuples()
        .execute()
    )[0][0]


def forget_before(window: int) -> int:
    """Delete the counters of windows older than ``window``; returns how many went."""
    return RateLimitWindow.delete().where(RateLimitWindow.window < window).execute()
