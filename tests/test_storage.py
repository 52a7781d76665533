"""Storage on SQLite and PostgreSQL: transitions are single conditional statements, one winner each."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import uuid

import hypothesis
import peewee
import pytest
from hypothesis import given
from hypothesis import strategies as st

import storage
from harness.factories import make, take
from storage import devices, events, ingest, models, queries, recipients, schedule, transitions
from storage.clock import to_db, utcnow
from storage.database import Prepared


def test_create_records_a_created_event(db):
    n = make()
    (created,) = queries.history(n.id)
    assert (created.kind, created.at, created.host) == ("created", n.created_at, "api-1")
    assert queries.get(n.id).status == models.PENDING


def test_create_stores_what_it_was_given_and_returns_the_id(db):
    now = utcnow()
    given = {
        "channel": "push", "recipient_id": "r1", "content": "hello", "title": "t", "data": {"a": [1, None]},
        "timezone": "Europe/Warsaw", "scheduled_time": now, "appropriate_delivery": False,
        "due_at": now + dt.timedelta(hours=3),
    }  # fmt: skip
    nid = ingest.create(host="api-9", **given)
    row = queries.get(nid)
    assert {name: getattr(row, name) for name in given} == given
    assert (str(row.id), row.api_host, row.status, row.attempt_count, row.message_seq) == (
        nid,
        "api-9",
        models.PENDING,
        0,
        0,
    )


def test_created_is_read_from_the_row_not_stored_twice(db):
    n = make()
    assert models.NotificationEvent.select().count() == 0  # accepting writes the row alone
    # A "created" event stored by an earlier version says the same as the row: shown once.
    events.record(n.id, "created", "api-1", at=n.created_at)
    assert [e.kind for e in queries.history(n.id)] == ["created"]
    assert queries.history("00000000-0000-0000-0000-000000000000") == []


def due_now_row():
    """A validated push request as the API stores it, due now."""
    now = utcnow()
    return {
        "channel": "push", "recipient_id": "r1", "content": "hello", "timezone": "UTC",
        "scheduled_time": now, "appropriate_delivery": True, "due_at": now,
    }  # fmt: skip


def test_a_batch_is_created_without_event_rows(db):
    row = due_now_row()
    ids = ingest.create_many([row, row], host="api-2")
    assert models.NotificationEvent.select().count() == 0
    assert [[(e.kind, e.host) for e in queries.history(i)] for i in ids] == [[("created", "api-2")]] * 2


def test_a_batch_stores_every_character_as_sent(db):
    now = utcnow()
    awkward = 'back\\slash \\N tab\t new\nline cr\r \\. quote" ü 😀 \u2028'
    row = {
        "channel": "push", "recipient_id": "r\\1", "content": awkward, "title": "\\N",
        "timezone": "Asia/Tokyo", "data": {"k\t": [awkward, None, 1.5, True]}, "scheduled_time": now,
        "appropriate_delivery": False,
        "due_at": now + dt.timedelta(hours=1),
    }  # fmt: skip
    email = {**row, "channel": "email", "title": None, "data": None, "subject": "Invoice"}
    pushed, mailed = (queries.get(i) for i in ingest.create_many([row, email], host="api-2"))
    for stored, sent in ((pushed, row), (mailed, email)):
        assert {name: getattr(stored, name) for name in sent} == sent
    assert (mailed.title, mailed.data, pushed.subject) == (None, None, None)
    assert (pushed.status, pushed.attempt_count, pushed.forced, pushed.message_seq) == (
        models.PENDING,
        0,
        False,
        0,
    )
    assert (pushed.api_host, pushed.created_at, pushed.updated_at) == (
        "api-2",
        pushed.created_at,
        pushed.created_at,
    )


def test_a_batch_that_fails_stores_none_of_its_rows(db):
    row = due_now_row()
    first, second = ingest.new_ids(2)
    with pytest.raises(peewee.IntegrityError):
        ingest.create_many([row, row, row], host="api-2", ids=[first, second, first])
    assert models.Notification.select().count() == 0
    with pytest.raises(peewee.IntegrityError), storage.db.atomic():
        ingest.create_many([row], host="api-2", ids=[first])
        ingest.create_many([row], host="api-2", ids=[first])  # inside a transaction of the caller's
    assert models.Notification.select().count() == 0


@given(randomness=st.binary(min_size=0, max_size=16 * 8).map(lambda b: b[: len(b) // 16 * 16]))
@hypothesis.settings(max_examples=200, deadline=None, database=None)
def test_new_ids_are_the_version_4_uuids_of_their_randomness(randomness):
    expected = [
        str(uuid.UUID(bytes=randomness[i : i + 16], version=4)) for i in range(0, len(randomness), 16)
    ]
    assert ingest.uuids_of(randomness) == expected


@given(
    moment=st.datetimes(
        dt.datetime(1970, 1, 1),
        dt.datetime(2200, 1, 1),
        timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=-5))]),
    ),
    fold=st.sampled_from([0, 1]),
)
def test_a_stored_time_is_the_naive_utc_of_the_instant(moment, fold):
    moment = moment.replace(fold=fold)
    stored = to_db(moment)
    expected = moment.astimezone(dt.UTC).replace(tzinfo=None)
    assert (stored, stored.tzinfo, stored.fold) == (expected, None, expected.fold)


def test_profiles_are_read_in_one_query_as_stored(db):
    ada, bob, nobody = (f"{name}-{uuid.uuid4().hex[:8]}" for name in ("ada", "bob", "nobody"))
    window = {"start": "09:00", "end": "17:00", "days": ["mon"]}
    recipients.replace(ada, {"timezone": "Europe/Warsaw", "delivery_window": window})
    recipients.replace(bob, {"preferences": {"channels": {"push": False}}})
    found = recipients.profiles([ada, bob, ada, nobody])
    assert sorted(found) == sorted([ada, bob])
    assert (found[ada].timezone, found[ada].delivery_window, found[ada].preferences) == (
        "Europe/Warsaw",
        window,
        None,
    )
    assert found[bob].preferences == {"channels": {"push": False}}
    assert recipients.profiles([]) == {}
    odd = f"odd\x1f{ada}"  # holds the character the usual lookup joins the ids with
    recipients.replace(odd, {"locale": "pl"})
    assert sorted(recipients.profiles([ada, odd, ""])) == sorted([ada, odd])


def test_take_due_takes_only_rows_within_the_horizon(db):
    soon, later = make(due_in=30), make(due_in=3600)
    taken = take(horizon=60)
    assert [d.notification_id for d in taken] == [str(soon.id)]
    assert taken[0].seq == 1
    assert queries.get(later.id).message_seq == 0


def test_take_due_does_not_take_a_row_twice_while_its_message_is_queued(db):
    make()
    assert len(take()) == 1
    assert take() == []


def test_expired_dispatch_is_taken_again_with_a_new_seq(db):
    n = make()
    first = take(lease=0.0, horizon=1)
    models.Notification.update(lease_until=utcnow() - dt.timedelta(seconds=1)).execute()
    second = take()
    assert [d.seq for d in first + second] == [1, 2]
    assert transitions.claim({n.id: 1}, host="w", lease=60) == [], "the older message is stale"
    assert transitions.claim({n.id: 2}, host="w", lease=60) != []


def test_take_due_filters_by_channel(db):
    make(channel="email")
    make(channel="push")
    assert [d.channel for d in take(channels=["email"])] == ["email"]


def test_claim_moves_to_processing_and_counts_the_attempt(db):
    n = make()
    (d,) = take()
    (claimed,) = transitions.claim({n.id: d.seq}, host="worker-1", lease=60)
    assert queries.get(n.id).status == models.PROCESSING
    assert (claimed.id, claimed.attempt_count, claimed.worker_host) == (str(n.id), 1, "worker-1")
    assert (claimed.recipient_id, claimed.content, claimed.due_at) == (n.recipient_id, n.content, n.due_at)
    assert transitions.claim({n.id: d.seq}, host="worker-2", lease=60) == [], (
        "a duplicate message does nothing"
    )


def test_a_claim_on_postgres_says_whether_recipients_have_an_active_device_and_a_profile(db):
    for recipient in ("ann", "bob", "cid"):
        make(recipient_id=recipient)
    make("email", recipient_id="ann")
    devices.register("ann", kind="fcm", address="ann-phone")
    recipients.replace("ann", {"email": "ann@example.com"})
    gone, _ = devices.register("cid", kind="fcm", address="cid-phone")
    devices.disable(gone.id, "UNREGISTERED")
    claimed = transitions.claim({d.notification_id: d.seq for d in take()}, host="worker-1", lease=60)
    said = {(c.recipient_id, c.channel): (c.has_devices, c.has_profile) for c in claimed}
    if not storage.is_postgres():
        assert set(said.values()) == {(None, None)}, "left to be looked up"
        return
    assert said == {
        ("ann", "push"): (True, True),
        ("ann", "email"): (False, True),  # an email goes to no device
        ("bob", "push"): (False, False),
        ("cid", "push"): (False, False),  # its one device is disabled
    }


def test_a_prepared_statement_runs_on_each_connection_a_new_one_included(db):
    if not storage.is_postgres():
        pytest.skip("PostgreSQL prepares statements; SQLite runs its own")
    total = Prepared("test_total", "SELECT %s + %s", ("int", "int"))
    assert total.execute((1, 2)).fetchone() == (3,)
    assert total.execute((2, 3)).fetchone() == (5,), "prepared once, executed again"
    storage.db.manual_close()  # as after an outage: the next query opens a new connection
    assert total.execute((3, 4)).fetchone() == (7,), "prepared again on the new connection"
    with pytest.raises(ValueError):
        Prepared("test_wrong", "SELECT %s", ("int", "int"))


def test_only_one_of_many_racing_claims_wins(db):
    n = make()
    (d,) = take()
    winners, barrier = [], threading.Barrier(8)

    def race():
        with storage.db.connection_context():
            barrier.wait()
            if transitions.claim({n.id: d.seq}, host=threading.current_thread().name, lease=60):
                winners.append(1)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert queries.get(n.id).attempt_count == 1


@pytest.mark.parametrize("rounds", [20])
def test_cancel_racing_claim_has_exactly_one_winner(db, rounds):
    for _ in range(rounds):
        n = make()
        (d,) = take()
        outcome, barrier = {}, threading.Barrier(2)

        def claim(nid=n.id, seq=d.seq, barrier=barrier, outcome=outcome):
            with storage.db.connection_context():
                barrier.wait()
                outcome["claimed"] = transitions.claim({nid: seq}, host="w", lease=60) != []

        def cancel(nid=n.id, barrier=barrier, outcome=outcome):
            with storage.db.connection_context():
                barrier.wait()
                try:
                    transitions.cancel(nid, host="api")
                    outcome["cancelled"] = True
                except transitions.TransitionConflict:
                    outcome["cancelled"] = False

        threads = [threading.Thread(target=claim), threading.Thread(target=cancel)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcome["claimed"] != outcome["cancelled"]
        assert queries.get(n.id).status == (models.PROCESSING if outcome["claimed"] else models.CANCELLED)


def test_delivered_only_by_the_claiming_message(db):
    n = make()
    (d,) = take()
    transitions.claim({n.id: d.seq}, host="w", lease=60)
    assert transitions.mark_delivered({n.id: d.seq + 1}, host="w") == set()
    assert transitions.mark_delivered({n.id: d.seq}, host="w") == {str(n.id)}
    row = queries.get(n.id)
    assert row.status == models.DELIVERED
    assert row.delivered_at is not None
    assert [e.kind for e in queries.history(n.id)] == ["created", "attempt", "delivered"]


def test_stalled_processing_row_is_taken_back_after_its_lease(db):
    n = make()
    (d,) = take()
    transitions.claim({n.id: d.seq}, host="dead-worker", lease=0.0)
    (again,) = take()
    assert again.seq == d.seq + 1
    assert queries.get(n.id).status == models.PENDING
    assert not transitions.mark_delivered({n.id: d.seq}, host="dead-worker"), (
        "the dead worker's claim is void"
    )


def test_release_for_retry_keeps_the_row_for_the_same_message(db):
    n = make()
    (d,) = take()
    transitions.claim({n.id: d.seq}, host="w", lease=60)
    transitions.release_for_retry(n.id, d.seq, host="w", error="503 from endpoint", lease=300)
    assert take() == [], "the retry message owns the row"
    (retried,) = transitions.claim({n.id: d.seq}, host="w", lease=60)
    assert retried.attempt_count == 2
    assert retried.last_error == "503 from endpoint"


def test_failed_keeps_the_reason(db):
    n = make()
    (d,) = take()
    transitions.claim({n.id: d.seq}, host="w", lease=60)
    transitions.mark_failed(n.id, d.seq, host="w", error="550 no such user")
    row = queries.get(n.id)
    assert (row.status, row.last_error) == (models.FAILED, "550 no such user")


def test_force_a_failed_one_makes_it_due_now_with_a_fresh_budget(db):
    n = make(due_in=3600)
    models.Notification.update(status=models.FAILED, attempt_count=6).execute()
    forced = transitions.force(n.id, host="api", lease=600)
    assert forced.status == models.PENDING
    assert forced.forced is True
    assert forced.attempts_at_force == 6
    assert forced.message_seq == 1
    assert forced.due_at <= utcnow()


def test_force_and_cancel_refuse_finished_rows(db):
    n = make()
    models.Notification.update(status=models.DELIVERED).execute()
    with pytest.raises(transitions.TransitionConflict, match="Delivered"):
        transitions.force(n.id, host="api", lease=600)
    with pytest.raises(transitions.TransitionConflict, match="Delivered"):
        transitions.cancel(n.id, host="api")


def test_unknown_id_is_not_found(db):
    with pytest.raises(queries.NotificationNotFound):
        transitions.cancel("00000000-0000-0000-0000-000000000000", host="api")


def test_listing_filters_and_orders_newest_first(db):
    a = make(recipient_id="a")
    b = make(recipient_id="b", channel="email")
    assert [n.id for n in queries.listing()] == [b.id, a.id]
    assert [n.id for n in queries.listing(channel="push")] == [a.id]
    assert [n.id for n in queries.listing(recipient_id="b", status=models.PENDING)] == [b.id]


def test_schema_setup_is_idempotent_and_safe_for_concurrent_starts(database_url):
    script = "import storage, sys; storage.configure(sys.argv[1])"
    processes = [subprocess.Popen([sys.executable, "-c", script, database_url]) for _ in range(4)]
    assert [p.wait(timeout=60) for p in processes] == [0, 0, 0, 0]
    database = storage.configure(database_url)
    with database.connection_context():
        from storage.schema import MIGRATIONS, SchemaVersion

        with database.bind_ctx([SchemaVersion]):
            assert [v.version for v in SchemaVersion.select()] == list(range(1, len(MIGRATIONS) + 1))


def test_a_version_5_database_keeps_its_message_numbers_and_passes_in_flight(database_url):
    database = storage.configure(database_url)
    n = make()
    with database.connection_context():
        # The database as version 5 left it: the old names, and a pass in flight.
        database.execute_sql("ALTER TABLE notification RENAME COLUMN message_seq TO dispatch_seq")
        database.execute_sql("UPDATE notification SET dispatch_seq = 3")
        database.execute_sql("DROP TABLE scheduler_pass")
        database.execute_sql(
            "CREATE TABLE dispatch_pass"
            " (id BIGINT PRIMARY KEY, dispatches TEXT NOT NULL, lease_until TIMESTAMP)"
        )
        database.execute_sql(
            "INSERT INTO dispatch_pass VALUES (7, %s, %s)".replace("%s", database.param),
            (f'{{"{n.id}": 3}}', utcnow()),
        )
        database.execute_sql("DELETE FROM schema_version WHERE version > 5")
    storage.configure(database_url)
    assert queries.get(n.id).message_seq == 3
    (in_flight,) = models.SchedulerPass.select()
    assert (in_flight.id, in_flight.seqs) == (7, {str(n.id): 3})
    assert not storage.db.table_exists("dispatch_pass")
    models.SchedulerPass.delete().execute()


def test_unpublished_dispatches_are_released_to_the_next_pass(db):
    make()
    make()
    first, second = taken = take()
    with storage.db.atomic():
        pass_id = schedule.begin_pass(taken, lease=10)
    with storage.db.atomic():
        schedule.finish_pass(pass_id, published=[first], unpublished=[second], host="scheduler")
    (again,) = take()
    assert again.notification_id == second.notification_id
    assert again.seq == second.seq + 1
    assert [e.kind for e in queries.history(first.notification_id)] == ["created", "queued"]
    assert models.SchedulerPass.select().count() == 0


def test_a_batch_left_by_a_dead_scheduler_is_taken_after_its_short_lease(db):
    make()
    make()
    with storage.db.atomic():
        lost, kept = take()
        schedule.begin_pass([lost, kept], lease=0.0)  # taken, then the scheduler died publishing
        transitions.cancel(kept.notification_id, host="api")
    assert take() == [], "its message's lease has not run out"

    with storage.db.atomic():
        assert schedule.undo_abandoned_passes() == 1, "only the row still as the pass left it"
    (again,) = take()
    assert (again.notification_id, again.seq) == (lost.notification_id, lost.seq + 1)
    assert models.SchedulerPass.select().count() == 0


def test_a_pass_still_publishing_is_not_undone(db):
    make()
    with storage.db.atomic():
        taken = take()
        schedule.begin_pass(taken, lease=60)
    with storage.db.atomic():
        assert schedule.undo_abandoned_passes() == 0
    assert take() == []


def test_one_claim_takes_the_current_rows_of_a_message_and_no_others(db):
    current, cancelled, forced, other = make(), make(), make(), make(due_in=3600)
    dispatched = {d.notification_id: d.seq for d in take()}
    transitions.cancel(cancelled.id, host="api")
    transitions.force(forced.id, host="api", lease=60)
    message = {**dispatched, str(other.id): 1}

    claimed = transitions.claim(message, host="w", lease=60)

    assert [str(n.id) for n in claimed] == [str(current.id)]
    assert sorted(transitions.stale({k: v for k, v in message.items() if k != str(current.id)})) == sorted(
        [str(cancelled.id), str(forced.id), str(other.id)]
    )
    assert transitions.mark_delivered(message, host="w") == {str(current.id)}
    assert str(current.id) not in transitions.stale(message), (
        "a row this message delivered is not stale for it"
    )


def test_deferred_row_goes_back_uncounted_for_the_same_message(db):
    n = make()
    (d,) = take()
    transitions.claim({n.id: d.seq}, host="w", lease=60)
    assert transitions.defer(n.id, d.seq, host="w", reason="not attempted", lease=300)
    row = queries.get(n.id)
    assert (row.status, row.attempt_count) == (models.PENDING, 0)
    assert take() == [], "the retry message owns the row"
    (again,) = transitions.claim({n.id: d.seq}, host="w", lease=60)
    assert again.attempt_count == 1
    assert [e.kind for e in queries.history(n.id)][-2:] == ["deferred", "attempt"]


def all_at_once(*work) -> list[Exception]:
    """Run each callable in a thread of its own with its own connection, all released together.

    Returns what they raised: a deadlock PostgreSQL broke would be one of them.
    """
    errors: list[Exception] = []
    barrier = threading.Barrier(len(work))

    def run(job):
        with storage.db.connection_context():
            barrier.wait()
            try:
                job()
            except Exception as exc:
                errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def releasing(taken, times=1):
    def release():
        for _ in range(times):
            with storage.db.atomic():
                schedule.release({d.notification_id: d.seq for d in reversed(taken)})

    return release


def test_overlapping_claims_and_releases_neither_deadlock_nor_claim_twice(db):
    rows = [make() for _ in range(60)]
    taken = take(limit=100)
    message = {d.notification_id: d.seq for d in taken}
    forwards, backwards = dict(message), dict(reversed(message.items()))
    claims: list[str] = []

    def claiming(dispatches):
        return lambda: claims.extend(str(n.id) for n in transitions.claim(dispatches, host="w", lease=60))

    orders = (forwards, backwards, forwards, backwards)
    assert all_at_once(*(claiming(d) for d in orders), releasing(taken)) == []
    assert sorted(claims) == sorted(str(n.id) for n in rows)


def test_rows_whose_lease_lapsed_are_taken_before_fresh_ones(db):
    old = make(due_in=-10)
    take()
    models.Notification.update(lease_until=utcnow() - dt.timedelta(seconds=1)).execute()
    make(due_in=-20)  # due earlier, but never dispatched: it waits for the next pass
    assert [d.notification_id for d in take(limit=1)] == [str(old.id)]


def test_a_pass_takes_up_to_the_limit_for_each_channel(db):
    for channel in ("email", "email", "push", "push"):
        make(channel)
    assert sorted(d.channel for d in take(limit=1)) == ["email", "push"]
    assert [d.channel for d in take(limit=5, channels=["push"])] == ["push"]


def test_marks_of_delivery_racing_a_release_do_not_deadlock(db):
    for _ in range(200):
        make()
    taken = take(limit=500)
    transitions.claim({d.notification_id: d.seq for d in taken}, host="w", lease=60)
    delivered: list[str] = []

    def marking(chunk):
        def mark():
            for part in (chunk[::-1][i : i + 10] for i in range(0, len(chunk), 10)):
                delivered.extend(
                    transitions.mark_delivered({d.notification_id: d.seq for d in part}, host="w")
                )

        return mark

    chunks = [taken[i::4] for i in range(4)]
    assert all_at_once(*(marking(chunk) for chunk in chunks), releasing(taken, times=5)) == []
    assert sorted(delivered) == sorted(d.notification_id for d in taken)
