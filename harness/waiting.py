"""The one poller: await a condition, with a deadline and a description of what was awaited."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    timeout: float = 20.0,
    *,
    interval: float = 0.05,
    what: str = "",
    fail: bool = True,
) -> T:
    """Await ``condition()`` becoming truthy and return that value.

    After ``timeout`` seconds, raise TimeoutError naming ``what`` (or the condition); with
    ``fail=False`` return the last, falsy, value instead (for a benchmark that reports what it got).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            break
        time.sleep(interval)
    if not value and fail:
        raise TimeoutError(f"waited {timeout:g}s for {what or condition}")
    return value
