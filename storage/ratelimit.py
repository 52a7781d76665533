"""Request counters per client and fixed time window, shared by every process through the database."""

from __future__ import annotations

from storage.models import RateLimitWindow


def hit(client: str, window: int) -> int:
    """Count one request of ``client`` in ``window`` and return how many it has made there so far.

    One upsert, so that concurrent requests in any number of processes each see their own count.
    """
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
