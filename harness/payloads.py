"""Request bodies for the API: push notifications one at a time, and batches of them."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any


def push_item(
    i: int, scheduled_time: dt.datetime | None = None, *, recipient_id: str | None = None
) -> dict[str, Any]:
    """The ``i``-th push notification of a run, due now or at ``scheduled_time``."""
    item: dict[str, Any] = {
        "channel": "push",
        "recipient_id": recipient_id or f"user{i % 10000}",
        "content": "Your order has been shipped!",
        "title": "Order update",
    }
    if scheduled_time is not None:
        item["scheduled_time"] = scheduled_time.isoformat()
    return item


def batch_body(items: list[dict[str, Any]]) -> bytes:
    """``POST /notifications/batch``'s body, encoded."""
    return json.dumps({"notifications": items}).encode()


def next_week() -> dt.datetime:
    """Noon UTC a week from today: far beyond the scheduler's horizon."""
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=7)).replace(
        hour=12, minute=0, second=0, microsecond=0
    )
