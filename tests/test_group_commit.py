"""Group commit: threads storing at once share statements and commits, and each learns its own outcome."""

from __future__ import annotations

import threading

import peewee

import storage
from harness.factories import make
from harness.waiting import wait_until
from storage import models
from storage.group_commit import GroupCommit


def submit_from_threads(committer: GroupCommit, items: list) -> dict:
    """Submit each item from a thread of its own, all released together; each item's error or None."""
    outcomes: dict = {}
    barrier = threading.Barrier(len(items))

    def run(item) -> None:
        barrier.wait()
        try:
            committer.submit(item)
            outcomes[item] = None
        except Exception as exc:
            outcomes[item] = exc

    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return outcomes


class Recorder:
    """A write that records its groups; the first one waits until released, so that others gather."""

    def __init__(self, fail=lambda group: None) -> None:
        self.groups: list[list] = []
        self.first_started = threading.Event()
        self.release_first = threading.Event()
        self.fail = fail

    def __call__(self, group) -> None:
        if not self.groups:
            self.groups.append(list(group))
            self.first_started.set()
            assert self.release_first.wait(10)
        else:
            self.groups.append(list(group))
        self.fail(group)


def test_items_arriving_during_a_write_go_together_in_the_next():
    write = Recorder()
    committer = GroupCommit(write)
    first = threading.Thread(target=committer.submit, args=("first",))
    first.start()
    assert write.first_started.wait(10)
    others = threading.Thread(target=lambda: submit_from_threads(committer, list(range(12))))
    others.start()
    # All twelve wait behind the write in progress before it finishes.
    wait_until(lambda: len(committer._waiting) == 12, timeout=10, interval=0.01)
    write.release_first.set()
    first.join(10)
    others.join(10)

    assert write.groups[0] == ["first"]
    assert sorted(write.groups[1]) == list(range(12))
    assert len(write.groups) == 2


def test_an_item_that_fails_fails_alone():
    def fail(group) -> None:
        if "bad" in group:
            raise peewee.IntegrityError("bad row")

    write = Recorder(fail)
    write.release_first.set()
    outcomes = submit_from_threads(GroupCommit(write), ["a", "b", "bad", "c"])

    assert isinstance(outcomes.pop("bad"), peewee.IntegrityError)
    assert outcomes == {"a": None, "b": None, "c": None}


def test_an_outage_fails_the_whole_group():
    def down(group) -> None:
        raise peewee.OperationalError("server closed the connection unexpectedly")

    write = Recorder(down)
    write.release_first.set()
    outcomes = submit_from_threads(GroupCommit(write), ["a", "b", "c"])

    assert all(isinstance(error, peewee.OperationalError) for error in outcomes.values())
    assert len(outcomes) == 3


def test_concurrent_creates_are_all_stored_once(db):
    threads = 16
    made: list[models.Notification] = []
    barrier = threading.Barrier(threads)

    def create(i: int) -> None:
        with storage.db.connection_context():
            barrier.wait()
            made.append(make(recipient_id=f"r{i}"))

    workers = [threading.Thread(target=create, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)

    stored = {str(n.id): n.recipient_id for n in models.Notification.select()}
    assert stored == {str(n.id): n.recipient_id for n in made}
    assert sorted(stored.values()) == sorted(f"r{i}" for i in range(threads))


def test_a_create_inside_a_transaction_is_the_transaction_s(db):
    with storage.db.atomic() as transaction:
        made = make()
        transaction.rollback()
    assert not models.Notification.select().where(models.Notification.id == made.id).exists()
