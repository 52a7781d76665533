"""A push notification's deliveries: where each attempt goes and what became of it, on both databases."""

from __future__ import annotations

import threading

import pytest

import storage
from api import create_app
from harness.factories import make, take
from storage import deliveries, devices, models, queries, transitions
from storage.deliveries import Result
from storage.models import DELIVERED_DELIVERY, FAILED_DELIVERY, PENDING_DELIVERY


def plan_one(notification, *, attempt=1, forced_after=0, fallback="webhook"):
    """Plan attempt ``attempt`` of the notification (counted since a force after ``forced_after``)."""
    claim = deliveries.Claim(
        str(notification.id), notification.recipient_id, forced_after + attempt, forced_after
    )
    return deliveries.plan([claim], fallback=fallback, host="w1")[str(notification.id)]


def phone(recipient="r1", token="token-1"):
    return devices.register(recipient, kind="fcm", address=token)[0]


def outcome(target, status, **extra):
    event = {"delivered": "device_delivered", "failed": "device_failed", "pending": "device_retry"}[status]
    return Result(target.notification_id, target.device_id, target.kind, status, event, **extra)


def rows(notification):
    return {
        (str(d.device_id) if d.device_id else None): d for d in deliveries.of_notification(notification.id)
    }


def test_a_recipient_without_devices_gets_one_delivery_to_the_fallback(db):
    n = make()
    plan = plan_one(n, fallback="outbox")
    assert [(t.kind, t.device) for t in plan.targets] == [("outbox", None)]
    assert (plan.delivered, plan.failed) == (0, [])
    assert deliveries.of_notification(n.id) == [], "written once tried"
    deliveries.record([outcome(plan.targets[0], "pending", error="HTTP 503")], host="w1")
    (row,) = deliveries.of_notification(n.id)
    assert (row.device_id, row.kind, row.status, row.attempts) == (None, "outbox", PENDING_DELIVERY, 1)
    assert [t.kind for t in plan_one(n, attempt=2, fallback="outbox").targets] == ["outbox"]


def test_a_first_attempt_goes_to_every_active_device_of_the_recipient(db):
    n = make(recipient_id="ann")
    first, second = phone("ann", "a"), phone("ann", "b")
    gone = phone("ann", "c")
    devices.disable(gone.id, "UNREGISTERED")
    phone("bob", "d")
    plan = plan_one(n)
    assert [t.device.id for t in plan.targets] == [str(first.id), str(second.id)]
    assert set(rows(n)) == {str(first.id), str(second.id)}
    assert all(r.status == PENDING_DELIVERY for r in rows(n).values())


def test_outcomes_are_recorded_and_a_retry_goes_only_where_it_was_not_accepted(db):
    n = make(recipient_id="ann")
    accepting, failing, refusing = phone("ann", "a"), phone("ann", "b"), phone("ann", "c")
    one, two, three = plan_one(n).targets
    deliveries.record(
        [
            outcome(one, "delivered", provider_message_id="projects/p/messages/1"),
            outcome(two, "pending", error="503 Service Unavailable"),
            outcome(three, "failed", error="400 INVALID_ARGUMENT"),
        ],
        host="w1",
    )
    stored = rows(n)
    assert (stored[str(accepting.id)].status, stored[str(accepting.id)].attempts) == (DELIVERED_DELIVERY, 1)
    assert stored[str(accepting.id)].provider_message_id == "projects/p/messages/1"
    assert stored[str(accepting.id)].delivered_at is not None
    assert (stored[str(failing.id)].status, stored[str(failing.id)].error) == (
        PENDING_DELIVERY,
        "503 Service Unavailable",
    )
    assert stored[str(refusing.id)].status == FAILED_DELIVERY
    assert models.Device.get_by_id(accepting.id).last_success_at is not None
    assert models.Device.get_by_id(failing.id).last_success_at is None
    kinds = [e.kind for e in queries.history(n.id)]
    assert kinds == ["created", "device_delivered", "device_retry", "device_failed"]
    assert str(accepting.id) in queries.history(n.id)[1].detail

    retry = plan_one(n, attempt=2)
    assert [t.device.id for t in retry.targets] == [str(failing.id)]
    assert retry.delivered == 1
    assert [(r.device_id, r.error) for r in retry.failed] == [(str(refusing.id), "400 INVALID_ARGUMENT")]
    deliveries.record([outcome(retry.targets[0], "delivered", provider_message_id="2")], host="w1")
    assert rows(n)[str(failing.id)].attempts == 2


def test_a_retry_skips_a_device_disabled_removed_or_moved_meanwhile(db):
    n = make(recipient_id="ann")
    disabled, removed, moved, kept = (phone("ann", t) for t in "abcd")
    plan = plan_one(n)
    deliveries.record([outcome(t, "pending", error="timed out") for t in plan.targets], host="w1")
    devices.disable(disabled.id, "410 Gone")
    devices.delete("ann", removed.id)
    devices.register("bob", kind="fcm", address="c")

    retry = plan_one(n, attempt=2)
    assert [t.device.id for t in retry.targets] == [str(kept.id)]
    stored = rows(n)
    assert "disabled (410 Gone)" in stored[str(disabled.id)].error
    assert "removed" in stored[str(removed.id)].error
    assert "another recipient" in stored[str(moved.id)].error
    for device in (disabled, removed, moved):
        assert (stored[str(device.id)].status, stored[str(device.id)].attempts) == (FAILED_DELIVERY, 1)
    assert sorted(r.device_id for r in retry.failed) == sorted(str(d.id) for d in (disabled, removed, moved))
    assert [e.kind for e in queries.history(n.id)].count("device_skipped") == 3


def test_a_forced_attempt_tries_the_failed_again_but_never_the_accepted(db):
    n = make(recipient_id="ann")
    accepted, refused = phone("ann", "a"), phone("ann", "b")
    one, two = plan_one(n).targets
    deliveries.record([outcome(one, "delivered"), outcome(two, "failed", error="400")], host="w1")
    newcomer = phone("ann", "c")

    forced = plan_one(n, forced_after=1)
    assert [t.device.id for t in forced.targets] == [str(refused.id), str(newcomer.id)]
    assert forced.delivered == 1 and forced.failed == []
    stored = rows(n)
    assert (stored[str(refused.id)].status, stored[str(refused.id)].error) == (PENDING_DELIVERY, None)
    assert stored[str(refused.id)].attempts == 1, "attempts keep counting"
    assert stored[str(accepted.id)].status == DELIVERED_DELIVERY


def test_a_forced_attempt_once_devices_came_leaves_the_fallback(db):
    n = make(recipient_id="ann")
    (fallback,) = plan_one(n).targets
    deliveries.record([outcome(fallback, "pending", error="HTTP 503")], host="w1")  # to be retried
    device = phone("ann")
    forced = plan_one(n, forced_after=1)
    assert [t.device.id for t in forced.targets] == [str(device.id)]
    stored = rows(n)
    assert (str(stored[None].target_id), stored[None].status) == (fallback.target_id, FAILED_DELIVERY)
    assert "devices changed" in stored[None].error


def test_a_claim_given_back_untried_forgets_the_deliveries_it_started(db):
    n = make(recipient_id="ann")
    first, second = phone("ann", "a"), phone("ann", "b")
    assert len(plan_one(n).targets) == 2
    deliveries.forget_untried([str(n.id)])
    assert deliveries.of_notification(n.id) == []
    devices.disable(second.id, "410 Gone")
    again = plan_one(n)  # the first attempt again, as the give-back left it
    assert [t.device.id for t in again.targets] == [str(first.id)]
    assert list(rows(n)) == [str(first.id)]


def test_a_failure_is_summed_up_by_device_or_by_the_fallbacks_reason(db):
    one = Result("n", None, "webhook", FAILED_DELIVERY, "failed", error="HTTP 400 Bad Request")
    assert deliveries.summary([one]) == "HTTP 400 Bad Request"
    two = [
        Result("n", "d1", "webpush", FAILED_DELIVERY, "device_gone", error="410 Gone"),
        Result("n", "d2", "apns", FAILED_DELIVERY, "device_failed", error="400 BadTopic"),
    ]
    assert deliveries.summary(two) == "webpush d1: 410 Gone; apns d2: 400 BadTopic"


def test_a_notification_shows_its_deliveries(database_url):
    client = create_app({"TESTING": True, "DATABASE_URL": database_url, "RUN_WORKERS": False}).test_client()
    try:
        nid = client.post("/notifications/push", json={"recipient_id": "ann", "content": "hi"}).json[
            "notification_id"
        ]
        assert client.get(f"/notifications/{nid}").json["deliveries"] == []
        device = phone("ann")
        (target,) = plan_one(queries.get(nid)).targets
        deliveries.record(
            [outcome(target, "delivered", provider_message_id="projects/p/messages/9")], host="w"
        )
        (shown,) = client.get(f"/notifications/{nid}").json["deliveries"]
        assert shown.pop("delivered_at").endswith("+00:00")
        assert shown == {
            "device_id": str(device.id), "kind": "fcm", "status": "delivered", "attempts": 1,
            "provider_message_id": "projects/p/messages/9", "error": None,
        }  # fmt: skip
        listed = client.get("/notifications").json["notifications"]
        assert "deliveries" not in listed[0], "the list leaves them out"
    finally:
        storage.db.close()


def test_messages_recording_the_same_devices_at_once_neither_deadlock_nor_lose_an_outcome(db):
    devices_of_ann = [phone("ann", f"token-{i}") for i in range(30)]
    notifications = [make(recipient_id="ann") for _ in range(40)]
    taken = take(limit=100)
    transitions.claim({d.notification_id: d.seq for d in taken}, host="w", lease=60)
    seqs = {d.notification_id: d.seq for d in taken}
    outcomes = {
        str(n.id): [
            Result(
                str(n.id), str(d.id), "fcm", DELIVERED_DELIVERY, "device_delivered", provider_message_id="m"
            )
            for d in devices_of_ann
        ]
        for n in notifications
    }
    errors: list[Exception] = []
    barrier = threading.Barrier(4)

    def record(ids):
        with storage.db.connection_context():
            barrier.wait()
            try:
                for part in (ids[i : i + 5] for i in range(0, len(ids), 5)):
                    # Each message's devices in turn, the other way round from the next message's.
                    results = [r for nid in part for r in outcomes[nid]][:: -1 if part[0] in ids[::2] else 1]
                    transitions.mark_delivered({nid: seqs[nid] for nid in part}, host="w", outcomes=results)
            except Exception as exc:
                errors.append(exc)

    ids = list(outcomes)
    threads = [threading.Thread(target=record, args=(ids[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert models.Delivery.select().where(models.Delivery.status == DELIVERED_DELIVERY).count() == 1200
    assert all(d.last_success_at for d in devices.of_recipient("ann"))


@pytest.mark.postgres
def test_a_messages_devices_are_read_through_the_recipient_index_before_any_statistics(fresh_postgres_url):
    """A device table just filled has no statistics yet; reading it whole for each message cost 5 ms."""
    database = storage.configure(fresh_postgres_url)
    try:
        database.execute_sql(
            "INSERT INTO device (id, recipient_id, kind, address, address_digest, active, created_at,"
            " last_seen_at) SELECT gen_random_uuid(), 'r' || i, 'fcm', 't' || i, md5('t' || i), true,"
            " now(), now() FROM generate_series(1, 5000) AS i"
        )
        wanted = [f"r{i}" for i in range(1, 5000, 100)]
        plan = "\n".join(
            row[0] for row in database.execute_sql(f"EXPLAIN {devices.PG_ACTIVE_OF}", (wanted,)).fetchall()
        )
        assert "device_recipient_id" in plan and "Seq Scan on device" not in plan, plan
        found = devices.active_of(wanted)
        assert sorted(found) == sorted(wanted) and all(len(d) == 1 for d in found.values())
    finally:
        database.close()
