"""Group commit: what many threads write at once goes to the database as one statement and one commit.

A thread hands in its item and waits. If no write is in progress it becomes the leader: it takes
every item waiting, writes them together on its own connection and wakes their threads. Items
arriving meanwhile wait for the next leader. Alone, a thread writes its item at once; under load the
groups grow by themselves, with no timer and no thread of their own (the leader/follower scheme of
database write-ahead logs). A thread returns only once its item is committed, or raises its error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from storage.database import UNAVAILABLE

Item = TypeVar("Item")


class _Slot(Generic[Item]):
    __slots__ = ("done", "error", "item")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.done = False
        self.error: BaseException | None = None


class GroupCommit(Generic[Item]):
    """Calls ``write(items)``, which must write them in one transaction, for groups of submitted items."""

    def __init__(self, write: Callable[[Sequence[Item]], None], *, max_group: int = 500) -> None:
        self._write = write
        self._max_group = max_group
        self._waiting: list[_Slot[Item]] = []
        self._writing = False
        self._changed = threading.Condition(threading.Lock())

    def submit(self, item: Item) -> None:
        """Return once ``item`` is written and committed; raise what writing it raised."""
        slot = _Slot(item)
        with self._changed:
            self._waiting.append(slot)
            while not slot.done and self._writing:
                self._changed.wait()
            if not slot.done:
                self._writing = True
                group = self._waiting[: self._max_group]
                del self._waiting[: self._max_group]
        if not slot.done:
            self._lead(group)
        if slot.error is not None:
            raise slot.error

    def _lead(self, group: list[_Slot[Item]]) -> None:
        try:
            self._write_each(group)
        except BaseException as exc:  # the leader's thread interrupted: nothing may pass as written
            for slot in group:
                slot.error = slot.error or exc
            raise
        finally:
            with self._changed:
                for slot in group:
                    slot.done = True
                self._writing = False
                self._changed.notify_all()

    def _write_each(self, group: list[_Slot[Item]]) -> None:
        try:
            self._write([slot.item for slot in group])
        except UNAVAILABLE as exc:  # nothing was written, and nothing can be now
            for slot in group:
                slot.error = exc
        except Exception as exc:
            if len(group) == 1:
                group[0].error = exc
                return
            # Any other error may be one item's own: each is written alone, so that it alone fails.
            for slot in group:
                try:
                    self._write([slot.item])
                except Exception as own:
                    slot.error = own
