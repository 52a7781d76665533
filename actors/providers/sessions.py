"""HTTP sessions the push senders keep: one ``requests.Session`` per thread, so connections are reused."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

import requests


class _Holder:
    """Holds one thread's session and closes it when the thread ends (no socket left to the GC)."""

    def __init__(self, session: requests.Session) -> None:
        self.session = session

    def __del__(self) -> None:
        self.session.close()


class ThreadSessions:
    """A session per thread, made by ``factory`` on the thread's first request."""

    def __init__(self, factory: Callable[[], requests.Session]) -> None:
        self._factory = factory
        self._local = threading.local()
        # Lets close() reach every thread's session; weak, so a finished thread's one can go.
        self._all: weakref.WeakSet[_Holder] = weakref.WeakSet()
        self._lock = threading.Lock()

    def get(self) -> requests.Session:
        """This thread's session."""
        holder: _Holder | None = getattr(self._local, "holder", None)
        if holder is None:
            holder = _Holder(self._factory())
            self._local.holder = holder
            with self._lock:
                self._all.add(holder)
        return holder.session

    def close(self) -> None:
        """Close every thread's connections (they reopen on the next request)."""
        with self._lock:
            holders = list(self._all)
        for holder in holders:
            holder.session.close()
