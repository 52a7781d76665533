"""Thin actors: claim a message's notifications, deliver each through its provider, record the outcomes.

A push notification goes to every active device of its recipient, each through the sender of its
kind, or, to a recipient without one, through the push provider (the webhook or the outbox); the
notification's deliveries (``storage.deliveries``) say where it went and where it is still to go.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import dramatiq

import logs
import settings
import storage
import unsubscribe
from actors.providers import (
    BatchProvider,
    DeliveryError,
    Device,
    DeviceGone,
    Envelope,
    PushMessage,
    TransientDeliveryError,
    provider_for,
    sender_for,
)
from storage import db, deliveries, devices, events, recipients, transitions
from storage.clock import utcnow
from storage.deliveries import Plan, Result, Target
from storage.models import DELIVERED_DELIVERY, FAILED_DELIVERY, PENDING_DELIVERY, Recipient

logger = logging.getLogger(__name__)

_RETRY_OPTIONS: dict[str, Any] = {
    "max_retries": settings.MAX_RETRY_ATTEMPTS,
    "min_backoff": max(1, int(settings.RETRY_DELAY * 1000)),
    "max_backoff": max(1, int(settings.RETRY_MAX_DELAY * 1000)),
}


@dramatiq.actor(queue_name="push", **_RETRY_OPTIONS)
def deliver_push(seqs: dict[str, int]) -> None:
    """Deliver push notifications: ``seqs`` maps their ids to the message numbers this message carries."""
    deliver(seqs)


@dramatiq.actor(queue_name="email", **_RETRY_OPTIONS)
def deliver_email(seqs: dict[str, int]) -> None:
    """Deliver emails: ``seqs`` maps their ids to the message numbers this message carries."""
    deliver(seqs)


ACTORS: dict[str, dramatiq.Actor] = {"push": deliver_push, "email": deliver_email}


def envelope_of(notification: transitions.Claimed, profile: Recipient | None = None) -> Envelope:
    """What the provider sends; an email goes to the address of the recipient's profile, if it has one."""
    return Envelope(
        notification_id=notification.id,
        channel=notification.channel,
        recipient_id=notification.recipient_id,
        content=notification.content,
        subject=notification.subject,
        title=notification.title,
        data=notification.data,
        html=notification.html,
        address=profile.email if profile is not None else None,
        unsubscribe_url=_unsubscribe_url(notification) if notification.channel == "email" else None,
    )


def push_message_of(notification: transitions.Claimed) -> PushMessage:
    return PushMessage(
        notification_id=notification.id,
        recipient_id=notification.recipient_id,
        content=notification.content,
        title=notification.title,
        data=notification.data,
        ttl=86400 if notification.ttl is None else notification.ttl,
        urgency=notification.urgency or "normal",
        collapse_key=notification.collapse_key,
    )


def device_of(target: Target) -> Device:
    """A stored device as a sender takes it."""
    stored = target.device
    assert stored is not None
    return Device(
        id=stored.id,
        kind=stored.kind,
        address=stored.address,
        p256dh=stored.p256dh,
        auth=stored.auth,
        environment=stored.environment,
        last_seen_at=stored.last_seen_at,
    )


def _unsubscribe_url(notification: transitions.Claimed) -> str:
    """Unsubscribes the recipient from the notification's category, or from all email without one."""
    token = unsubscribe.token_for(settings.SECRET_KEY, notification.recipient_id, notification.category)
    return unsubscribe.url_for(settings.PUBLIC_URL, token)


def deliver(seqs: dict[str, int], *, clock: Callable[[], float] = time.monotonic) -> None:
    """Deliver each notification the message is current for; stale and duplicate ones do nothing.

    A transient failure raises once the rest are done, so that the Retries middleware sends the
    message again later: its rows delivered or failed meanwhile are then no longer claimable.
    """
    batch = _Batch(seqs, clock)
    try:
        batch.run()
    except storage.UNAVAILABLE as exc:
        # Wait out a database outage here, so that it costs the message one retry, not all of them.
        logger.warning("Database unavailable while delivering %d notifications: %s", len(seqs), exc)
        if storage.wait_until_available(settings.DATABASE_WAIT):
            batch.salvage()
        raise dramatiq.Retry(f"database unavailable: {exc}", delay=100) from exc
    _raise_for_retry(batch.retry)


@dataclass(frozen=True)
class Outcome:
    """What a message did to one notification, for the metrics middleware to count once."""

    channel: str
    delivered: bool
    lateness: float = 0.0  # seconds from the due time to delivery


@dataclass(frozen=True)
class DeviceOutcome:
    """What one attempt did for one delivery of a push notification: delivered, failed, retry, gone."""

    kind: str  # webpush, unifiedpush, fcm, apns; webhook or outbox for a recipient without devices
    outcome: str


@dataclass(frozen=True)
class DeviceDisabled:
    """A device its push service said is gone, disabled by this message."""

    kind: str
    reason: str


# The outcomes of the message this worker thread is handling, one per notification it finished.
current_outcome = threading.local()

# Deliveries are recorded in one statement per this many, or after this many seconds: what a
# killed worker delivered but had not recorded is sent again, so the two bound the duplicates.
_RECORD_EVERY = 10
_RECORD_AFTER = 0.25


class _Batch:
    """The notifications of one message: claimed at once, delivered in turn, recorded in groups."""

    def __init__(self, seqs: dict[str, int], clock: Callable[[], float]) -> None:
        self.seqs = seqs
        self.clock = clock
        self.started = clock()
        self.untried: collections.deque[transitions.Claimed] = collections.deque()
        self.unrecorded: list[transitions.Claimed] = []
        # Where each unrecorded delivery went, when its provider said (the SMTP relay that took it).
        self.via: dict[str, str] = {}
        # Where each push notification goes on this attempt, and the outcomes not recorded yet.
        self.plans: dict[str, Plan] = {}
        self.results: dict[str, list[Result]] = {}
        self.recorded_at = self.started
        self.retry: list[Exception] = []
        self.outcomes: list[Outcome | DeviceOutcome | DeviceDisabled] = []
        self.profiles: dict[str, Recipient] = {}
        # What the push provider said of the notifications sent ahead in a group, not handled yet.
        self.sent: dict[str, DeliveryError | None] = {}
        current_outcome.value = self.outcomes

    def run(self) -> None:
        # Each worker thread keeps its connection from message to message; an outage closes it.
        db.connect(reuse_if_open=True)
        claimed = transitions.claim(self.seqs, host=settings.HOSTNAME, lease=settings.PROCESSING_LEASE)
        if len(claimed) < len(self.seqs):
            _skip_stale(self.seqs, {n.id for n in claimed})
        self.plans = deliveries.plan(
            [
                deliveries.Claim(n.id, n.recipient_id, n.attempt_count, n.attempts_at_force, n.has_devices)
                for n in claimed
                if n.channel == "push"
            ],
            fallback=provider_for("push").name,
            host=settings.HOSTNAME,
        )
        self.untried.extend(claimed)
        # Read now, not at acceptance: a profile changed since then still holds.
        self.profiles = recipients.profiles(n.recipient_id for n in claimed if n.has_profile is not False)
        while self.untried:
            sent = self.untried[0].id in self.sent
            if not sent and self.clock() - self.started > settings.PROCESSING_LEASE / 2:
                # A slow provider used up half the claim: give the rest back before it runs out.
                reason = "not attempted: the message ran out of time"
                self.give_back(reason)
                self.retry.append(TransientDeliveryError(reason))
                break
            if not sent:
                self.send_ahead()
            notification = self.untried.popleft()
            with logs.context(notification.id, notification.channel):
                _deliver_one(self, notification)
        self.record()

    def send_ahead(self) -> None:
        """Send the next notifications that go to the push provider alone in one go, if it can.

        At most as many as make up the next record, so that a worker killed meanwhile sends again
        at most a record's worth, as it would one by one (though more often all of it).
        """
        provider = provider_for("push")
        if not hasattr(provider, "deliver_many"):  # not a BatchProvider (the outbox, say)
            return
        room = _RECORD_EVERY - len(self.unrecorded)
        group: list[transitions.Claimed] = []
        for notification in self.untried:
            if len(group) == room or not self.to_provider_alone(notification):
                break
            group.append(notification)
        if len(group) > 1:
            answers = cast(BatchProvider, provider).deliver_many([envelope_of(n) for n in group])
            self.sent.update(zip([n.id for n in group], answers, strict=True))

    def to_provider_alone(self, notification: transitions.Claimed) -> bool:
        """A push notification whose attempt goes to the webhook or outbox and nowhere else."""
        plan = self.plans.get(notification.id)
        if plan is None or len(plan.targets) != 1 or plan.targets[0].device is not None:
            return False
        if _attempt(notification) > settings.MAX_RETRY_ATTEMPTS + 1:
            return False
        profile = self.profiles.get(notification.recipient_id)
        return not recipients.opted_out(profile, notification.channel, notification.category)

    def seq(self, notification: transitions.Claimed) -> int:
        return self.seqs[notification.id]

    def delivered(
        self, notification: transitions.Claimed, via: str | None = None, results: list[Result] | None = None
    ) -> None:
        self.unrecorded.append(notification)
        if via:
            self.via[notification.id] = via
        if results:
            self.results[notification.id] = results
        if len(self.unrecorded) >= _RECORD_EVERY or self.clock() - self.recorded_at >= _RECORD_AFTER:
            self.record()

    def record(self) -> None:
        """Record the deliveries made since the last time; count those whose claim still held.

        A push notification's deliveries are written with it, for those whose claim held.
        """
        results = [r for n in self.unrecorded for r in self.results.pop(n.id, [])]
        done = transitions.mark_delivered(
            {n.id: self.seq(n) for n in self.unrecorded},
            host=settings.HOSTNAME,
            details=self.via,
            outcomes=results,
        )
        held = [r for r in results if r.notification_id in done]
        now = utcnow()
        for notification in self.unrecorded:
            if notification.id in done:
                lateness = max(0.0, (now - notification.due_at).total_seconds())
                self.outcomes.append(Outcome(notification.channel, delivered=True, lateness=lateness))
        self.outcomes += _counted(held)
        self.unrecorded, self.via, self.recorded_at = [], {}, self.clock()

    def salvage(self) -> None:
        """After an outage: record what was delivered, give back what was not tried, for the retry."""
        try:
            self.record()
            self.give_back("not attempted: the database was unavailable")
        except storage.UNAVAILABLE as exc:
            # Left in Processing, the rows go out again when their claim runs out.
            logger.warning("Could not record the message's progress after the outage: %s", exc)

    def give_back(self, reason: str) -> None:
        """Return the rows not tried yet, uncounted, to the retry of this message."""
        deliveries.forget_untried(n.id for n in self.untried if n.channel == "push")
        while self.untried:
            notification = self.untried.popleft()
            transitions.defer(
                notification.id,
                self.seq(notification),
                host=settings.HOSTNAME,
                reason=reason,
                lease=_retry_lease(None),
            )


def _skip_stale(seqs: dict[str, int], claimed: set[str]) -> None:
    """Cancelled, delivered, forced or re-sent since this message was published: nothing to do."""
    stale = transitions.stale({nid: seq for nid, seq in seqs.items() if nid not in claimed})
    for notification_id in stale:
        seq = seqs[notification_id]
        events.record(notification_id, "skipped", settings.HOSTNAME, detail=f"stale message {seq}")
        logger.info("Skipped %s: message %d is no longer current", notification_id, seq)


def _attempt(notification: transitions.Claimed) -> int:
    """The attempt this is: 1 for the first, and again for the first since the notification was forced."""
    return notification.attempt_count - notification.attempts_at_force


def _deliver_one(batch: _Batch, notification: transitions.Claimed) -> None:
    host, seq, notification_id = settings.HOSTNAME, batch.seq(notification), notification.id
    profile = batch.profiles.get(notification.recipient_id)
    # Again here, not only at acceptance: the preference may have changed since (force included).
    opted_out = recipients.opted_out(profile, notification.channel, notification.category)
    if opted_out:
        if transitions.mark_opted_out(notification_id, seq, host=host, reason=opted_out):
            logger.info("Cancelled %s without sending: %s", notification_id, opted_out)
        return
    attempt = _attempt(notification)
    if attempt > settings.MAX_RETRY_ATTEMPTS + 1:
        # Only reachable when workers kept dying mid-delivery: stop before trying yet again.
        _give_up(batch, notification, "gave up: workers stopped mid-delivery")
        return
    if notification.channel == "push":
        _fan_out(batch, notification, attempt)
        return
    provider = provider_for(notification.channel)
    try:
        via = provider.deliver(envelope_of(notification, profile))
    except Exception as exc:
        if _record_failure(batch, notification, attempt, exc):
            batch.retry.append(exc)
        return
    batch.delivered(notification, via)
    logger.info("Delivered %s via %s on attempt %d", notification.id, via or provider.name, attempt)


def _give_up(batch: _Batch, notification: transitions.Claimed, error: str) -> None:
    host, seq = settings.HOSTNAME, batch.seq(notification)
    plan = batch.plans.get(notification.id, Plan())
    unsent = [
        _result(t, FAILED_DELIVERY, "device_failed", error=error, attempted=False) for t in plan.targets
    ]
    with db.atomic():
        if transitions.mark_failed(notification.id, seq, host=host, error=error):
            deliveries.record(unsent, host=host)
            batch.outcomes.append(Outcome(notification.channel, delivered=False))


def _fan_out(batch: _Batch, notification: transitions.Claimed, attempt: int) -> None:
    """Send a push notification where its plan says, then record what became of it.

    Delivered once a device accepted it and none waits for a retry; back to Pending for the
    message's retry while any delivery failed transiently with retries left; else Failed.
    """
    host, seq, notification_id = settings.HOSTNAME, batch.seq(notification), notification.id
    plan = batch.plans[notification_id]
    retries_left = attempt <= settings.MAX_RETRY_ATTEMPTS
    message = push_message_of(notification) if any(t.device for t in plan.targets) else None
    results: list[Result] = []
    transient: list[Exception] = []
    for target in plan.targets:
        results.append(_send(batch, notification, message, target, retries_left, transient))
    waiting = [r for r in results if r.status == PENDING_DELIVERY]
    accepted = plan.delivered + sum(1 for r in results if r.status == DELIVERED_DELIVERY)
    if waiting:
        error = deliveries.summary(waiting)
        asked = [
            e.retry_after for e in transient if isinstance(e, DeliveryError) and e.retry_after is not None
        ]
        lease = _retry_lease(max(asked, default=None))
        with db.atomic():
            if transitions.release_for_retry(notification_id, seq, host=host, error=error, lease=lease):
                deliveries.record(results, host=host)
                batch.outcomes += _counted(results)
        batch.retry += transient
        logger.warning(
            "Attempt %d for %s: %d of %d deliveries will be retried: %s",
            attempt, notification_id, len(waiting), len(results), error,
        )  # fmt: skip
    elif accepted:
        batch.delivered(notification, results=results)
        total = plan.delivered + len(plan.failed) + len(results)
        logger.info("Delivered %s to %d of %d on attempt %d", notification_id, accepted, total, attempt)
    else:
        error = deliveries.summary(plan.failed + results)
        with db.atomic():
            if transitions.mark_failed(notification_id, seq, host=host, error=error):
                deliveries.record(results, host=host)
                batch.outcomes += _counted(results)
                batch.outcomes.append(Outcome(notification.channel, delivered=False))
        logger.error("Failed %s after %d attempts: %s", notification_id, attempt, error)


def _send(
    batch: _Batch,
    notification: transitions.Claimed,
    message: PushMessage | None,
    target: Target,
    retries_left: bool,
    transient: list[Exception],
) -> Result:
    """One delivery's attempt: to a device through its kind's sender, or through the push provider."""
    try:
        if target.device is None:
            if notification.id in batch.sent:
                error = batch.sent.pop(notification.id)
                if error is not None:
                    raise error
            else:
                provider_for("push").deliver(envelope_of(notification))
            message_id = None
        else:
            assert message is not None
            message_id = sender_for(target.kind).send(device_of(target), message) or None
    except DeviceGone as exc:
        assert target.device is not None
        if devices.disable(target.device.id, exc.reason, seen=target.device.last_seen_at):
            batch.outcomes.append(DeviceDisabled(target.kind, exc.reason))
            logger.warning("Disabled %s device %s: %s", target.kind, target.device_id, exc.reason)
        return _result(target, FAILED_DELIVERY, "device_gone", error=f"gone, disabled: {exc.reason}")
    except Exception as exc:
        reason = exc.reason if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
        if (not isinstance(exc, DeliveryError) or exc.transient) and retries_left:
            transient.append(exc)
            return _result(target, PENDING_DELIVERY, "device_retry", error=reason)
        if target.device is not None:
            logger.warning("Delivery to %s device %s failed: %s", target.kind, target.device_id, reason)
        return _result(target, FAILED_DELIVERY, "device_failed", error=reason)
    return _result(target, DELIVERED_DELIVERY, "device_delivered", provider_message_id=message_id)


def _result(target: Target, status: str, event: str, **details: Any) -> Result:
    return Result(target.notification_id, target.device_id, target.kind, status, event, **details)


_OUTCOMES = {"device_delivered": "delivered", "device_retry": "retry", "device_gone": "gone"}


def _counted(results: list[Result]) -> list[DeviceOutcome]:
    """Each delivery's outcome for the metrics, once its record held; one not sent is no outcome."""
    return [DeviceOutcome(r.kind, _OUTCOMES.get(r.event, "failed")) for r in results if r.attempted]


def _retry_lease(retry_after: float | None) -> float:
    # The retry message must arrive within this lease, else the scheduler sends another.
    return max(settings.RETRY_MAX_DELAY, retry_after or 0) + settings.PROCESSING_LEASE


def _record_failure(batch: _Batch, notification: transitions.Claimed, attempt: int, exc: Exception) -> bool:
    """Record a failed attempt; True when the notification waits for the message's retry."""
    host, seq, notification_id = settings.HOSTNAME, batch.seq(notification), notification.id
    transient = not isinstance(exc, DeliveryError) or exc.transient
    reason = exc.reason if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
    if transient and attempt <= settings.MAX_RETRY_ATTEMPTS:
        retry_after = exc.retry_after if isinstance(exc, DeliveryError) else None
        lease = _retry_lease(retry_after)
        transitions.release_for_retry(notification_id, seq, host=host, error=reason, lease=lease)
        logger.warning("Attempt %d for %s failed, will retry: %s", attempt, notification_id, reason)
        return True
    if transitions.mark_failed(notification_id, seq, host=host, error=reason):
        batch.outcomes.append(Outcome(notification.channel, delivered=False))
    logger.error("Failed %s after %d attempts: %s", notification_id, attempt, reason)
    return False


def _raise_for_retry(failures: list[Exception]) -> None:
    """Hand the message to the Retries middleware, after the longest Retry-After asked for, if any."""
    if not failures:
        return
    asked = [f.retry_after for f in failures if isinstance(f, DeliveryError) and f.retry_after is not None]
    if asked:
        delay = min(max(asked), settings.RETRY_MAX_DELAY)
        raise dramatiq.Retry(str(failures[0]), delay=int(delay * 1000)) from failures[0]
    raise failures[0]
