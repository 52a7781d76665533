"""What clients and operators do, one function each: accept (one, a batch), force, cancel; change a recipient.

The API's views and the dashboard's actions both call these, and translate what they raise
(``NotificationNotFound``, ``TransitionConflict``) for their own kind of answer. The dashboard's
"retry" of a failed notification is ``force``. Accepting for an idempotent request stores its
notifications under ids derived from its key, once, whichever attempt gets that far.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from flask import current_app
from marshmallow import ValidationError, validate

import logs
from actors import scheduler
from api import prometheus, rendering, schemas
from api.delivery_time import Plan, Window, plan_delivery
from api.idempotency import RequestKey
from storage import ingest, queries, recipients, templates, transitions
from storage.clock import from_db, to_db
from storage.models import Notification, Recipient

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """A notification force or cancel changed, and the delivery message concerned, if any.

    For force, the message just sent (None when the broker was away: the scheduler sends it); for
    cancel, the message already queued, which will now do nothing.
    """

    notification: Notification
    message_id: str | None


class Rejected(ValueError):
    """A request valid in itself that the recipients' profiles make unusable; ``errors`` as a schema's."""

    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__(str(errors))
        self.errors = errors


def accept(channel: str, fields: dict[str, Any], key: RequestKey | None = None) -> str:
    """Store a validated push or email request as a Pending notification; return its id.

    Rejected when it is an email to a recipient id whose profile has no address.
    """
    ids = None
    if key is not None:
        ids, stored = _ids_for(key, 1)
        if stored:
            return ids[0]
    now = dt.datetime.now(dt.UTC)
    profile = recipients.find(fields["recipient_id"])
    try:
        row = _row(channel, fields, now, profile, _Hours.configured())
    except _NoAddress as exc:
        raise Rejected({"recipient_id": [str(exc)]}) from None
    reason = recipients.opted_out(profile, channel, row["category"])
    (notification_id,) = _store([row], ids, batch=False, opted_out={0: reason} if reason else {})
    with logs.context(notification_id, channel):
        logger.info("Accepted, due %s", row["due_at"].isoformat())
    return notification_id


def accept_batch(items: list[dict[str, Any]], key: RequestKey | None = None) -> list[str]:
    """Store validated requests, each with its ``channel``, all or none; return their ids in order."""
    ids = None
    if key is not None:
        ids, stored = _ids_for(key, len(items))
        if stored:
            return ids
    now = dt.datetime.now(dt.UTC)
    profiles = recipients.profiles(item["recipient_id"] for item in items)
    rows = _BatchRows(items, now, profiles, _Hours.configured())
    if any("template" in item for item in items):
        rows.make()  # templates are read from the database, which must not be asked while a COPY streams
    ids = _store(rows, ids, batch=True, opted_out=rows.opted_out)
    logger.info("Accepted a batch of %d", len(ids))
    return ids


class _BatchRows(Collection[dict[str, Any]]):
    """A batch's rows, made the first time they are read: storage writes the first to the database
    while the rest are made (a COPY streams them), and reading them again gives those made.

    Reading them fills ``opted_out`` (the indexes of rows whose recipients opted out, and why). An
    item that cannot be stored (an email without an address) makes the first reading end with
    Rejected, after the last item, naming every such item; a template that does not render raises
    its RenderError at once. Making a row must not use the database while they stream (the
    connection is the COPY's): a batch that does (its templates) is made whole first, by ``make``.
    """

    def __init__(
        self, items: list[dict[str, Any]], now: dt.datetime, profiles: dict[str, Recipient], hours: _Hours
    ) -> None:
        self.items, self.now, self.profiles, self.hours = items, now, profiles, hours
        self.opted_out: dict[int, str] = {}
        self.made: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, row: object) -> bool:
        return any(made == row for made in self)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.made) if self.made is not None else self._make()

    def make(self) -> None:
        """Make every row now, not as they are read."""
        if self.made is None:
            for _made in self._make():
                pass

    def _make(self) -> Iterator[dict[str, Any]]:
        made: list[dict[str, Any]] = []
        errors: dict[int, Any] = {}
        for index, item in enumerate(self.items):
            profile = self.profiles.get(item["recipient_id"])
            try:
                row = _row(item.pop("channel"), item, self.now, profile, self.hours, item=index)
            except _NoAddress as exc:
                errors[index] = {"recipient_id": [str(exc)]}
                continue
            if errors:
                continue  # none will be stored: the rest are made only for their errors
            made.append(row)
            # Without a profile there are no preferences to opt out by.
            if profile is not None and (
                reason := recipients.opted_out(profile, row["channel"], row["category"])
            ):
                self.opted_out[index] = reason
            yield row
        if errors:
            raise Rejected({"notifications": errors})
        self.made = made


def force(notification_id: Any) -> Outcome:
    """Make a Pending or Failed notification due now and send it to the workers at once."""
    config = current_app.config
    notification = transitions.force(notification_id, host=config["HOSTNAME"], lease=config["DISPATCH_LEASE"])
    return Outcome(notification, scheduler.publish_now(notification))


def cancel(notification_id: Any) -> Outcome:
    """Cancel a Pending notification; a message already queued for it will do nothing."""
    notification = transitions.cancel(notification_id, host=current_app.config["HOSTNAME"])
    published = notification.message_seq > 0
    return Outcome(
        notification,
        scheduler.message_id_for(notification_id, notification.message_seq) if published else None,
    )


def replace_recipient(recipient_id: str, profile: dict[str, Any]) -> tuple[Recipient, bool]:
    """Create or replace a recipient's profile; return it and whether it is new.

    Its notifications not yet handed to a worker move to its new delivery window.
    """
    recipient, created = recipients.replace(recipient_id, profile)
    if not created:
        _replan(recipient)
    return recipient, created


def update_recipient(recipient_id: str, changes: dict[str, Any]) -> Recipient:
    """Replace the profile's fields ``changes`` names; RecipientNotFound when there is no profile."""
    recipient = recipients.update(recipient_id, changes)
    if "delivery_window" in changes:
        _replan(recipient)
    return recipient


def erase_recipient(recipient_id: str) -> None:
    """Erase a recipient: profile gone, Pending notifications cancelled, all its notifications redacted."""
    redacted = recipients.erase(recipient_id, host=current_app.config["HOSTNAME"])
    logger.info("Erased a recipient and redacted %d notifications", redacted)


def unsubscribe(recipient_id: str, category: str | None) -> None:
    """Turn the recipient's email off for ``category`` (all its email without one), making its profile."""
    recipients.turn_off(recipient_id, "email", category)
    logger.info("A recipient unsubscribed from %s", f"{category} email" if category else "email")


def _replan(recipient: Recipient) -> None:
    """Move the recipient's Pending, unforced notifications to the due times its window gives now."""
    now = dt.datetime.now(dt.UTC)
    hours = _Hours.configured()
    plans = {}
    for notification in queries.awaiting_delivery(recipient.id):
        plan = _plan(
            from_db(notification.scheduled_time), ZoneInfo(notification.timezone), now, recipient, hours
        )
        if to_db(plan.due_at) != notification.due_at:
            plans[notification.id] = transitions.Replan(
                notification.message_seq, to_db(plan.due_at), plan.appropriate_delivery
            )
    if plans:
        moved = transitions.reschedule(plans, host=current_app.config["HOSTNAME"])
        scheduler.wake(plans[nid].due_at for nid in plans if str(nid) in moved)
        logger.info("Moved %d notifications of a recipient to its delivery window", len(moved))


@dataclass(frozen=True)
class _Hours:
    """The service's appropriate hours and default zone, read from its config once for many plans."""

    start: int
    end: int
    default_zone: ZoneInfo

    @classmethod
    def configured(cls) -> _Hours:
        config = current_app.config
        return cls(
            config["APPROPRIATE_HOURS_START"],
            config["APPROPRIATE_HOURS_END"],
            ZoneInfo(config["DEFAULT_TIMEZONE"]),
        )


def _plan(
    requested: dt.datetime | None, zone: ZoneInfo, now: dt.datetime, profile: Recipient | None, hours: _Hours
) -> Plan:
    window = profile.delivery_window if profile is not None else None
    return plan_delivery(
        requested,
        zone,
        now=now,
        start=hours.start,
        end=hours.end,
        window=None if window is None else Window.of(window),
    )


class _NoAddress(ValueError):
    """An email's recipient id is no address, and no profile gives one."""


_ADDRESS = validate.Email()


def is_address(recipient_id: str) -> bool:
    """An email address as the API takes one: RFC 5321's 254 characters at most."""
    if len(recipient_id) > 254:
        return False
    try:
        _ADDRESS(recipient_id)
    except ValidationError:
        return False
    return True


def _row(
    channel: str,
    fields: dict[str, Any],
    now: dt.datetime,
    profile: Recipient | None,
    hours: _Hours,
    item: int | None = None,
) -> dict[str, Any]:
    """The stored form of a validated request: its texts rendered, its zone chosen, its time resolved
    into a due time.

    The zone is the request's, else the recipient's, else the default. An email's recipient is an
    address, or a recipient with one (its address is read again when it is sent).
    """
    if channel == "email" and not is_address(fields["recipient_id"]) and not (profile and profile.email):
        raise _NoAddress("Must be an email address, or the id of a recipient whose profile has an email.")
    if "template" in fields:
        try:
            fields = _rendered(channel, dict(fields), profile)
        except rendering.RenderError as exc:
            exc.item = item
            raise
    zone = fields["timezone"] or (
        ZoneInfo(profile.timezone) if profile and profile.timezone else hours.default_zone
    )
    plan = _plan(fields["scheduled_time"], zone, now, profile, hours)
    row = dict(fields)  # the request's own fields, with these in place of what it asked for
    row["channel"] = channel
    row["timezone"] = zone.key
    row["scheduled_time"] = scheduled = to_db(plan.scheduled_time)
    row["appropriate_delivery"] = plan.appropriate_delivery
    # Most are due as asked: the same instant, one value (which the COPY writes once).
    row["due_at"] = scheduled if plan.due_at is plan.scheduled_time else to_db(plan.due_at)
    return row


def _rendered(channel: str, fields: dict[str, Any], profile: Recipient | None) -> dict[str, Any]:
    """A request naming a template, with the texts rendered from it; RenderError names what failed."""
    name, variables = fields.pop("template"), fields.pop("variables", None)
    try:
        template = templates.get(name)
    except templates.TemplateNotFound:
        raise rendering.RenderError("template", f"No template named {name!r}.") from None
    if template.channel != channel:
        raise rendering.RenderError("template", f"Is a {template.channel} template, not {channel}.")
    wanted = _wanted_locale(fields.pop("locale", None), profile)
    rendered = rendering.render(template.locales, template.default_locale, wanted, variables)
    try:
        texts = schemas.rendered_fields(channel, rendered.texts)
    except ValidationError as exc:
        field, messages = next(iter(exc.normalized_messages().items()))
        raise rendering.RenderError(
            field, f"As rendered (locale {rendered.locale}): {' '.join(messages)}"
        ) from None
    return {**fields, **texts, "template": name, "locale": rendered.locale}


def _wanted_locale(requested: str | None, profile: Recipient | None) -> str | None:
    """The locale a notification asks for: the request's, else the recipient's, else none."""
    # The template's own fallback (pl-PL, pl, its default) is rendering.choose_locale's.
    return requested or (profile.locale if profile is not None else None)


def _ids_for(key: RequestKey, count: int) -> tuple[list[str], bool]:
    """The ids for an idempotent request's ``count`` notifications, and whether they are stored already.

    The first generation of the key's ids that no notification has, or that the attempt this one
    resumes stored before it died; a batch is stored all or none, so its first id tells.
    """
    generation = 0
    while True:
        ids = key.notification_ids(generation, count)
        created_at = queries.created_at(ids[0])
        if created_at is None:
            return ids, False
        if key.resumed_since is not None and created_at >= to_db(key.resumed_since):
            logger.info("Accepted %d already, by an attempt that died before answering", count)
            return ids, True
        generation += 1


def _store(
    rows: Collection[dict[str, Any]], ids: list[str] | None, *, batch: bool, opted_out: dict[int, str]
) -> list[str]:
    """Store accepted rows, under ``ids`` if given; wake the schedulers if one falls due soon.

    A batch is stored all or none, in a transaction of its own (its rows may be made as they are
    stored, see _BatchRows, and ``opted_out`` filled meanwhile); a single row commits together with
    those other threads of this process store at the same time (see ingest.create). The rows at
    the indexes ``opted_out`` names are then cancelled for the reason it gives: their recipients
    opted out (accepted all the same, so that senders need no special case).
    """
    host = current_app.config["HOSTNAME"]
    if batch:
        ids = ingest.create_many(rows, host=host, ids=ids)
    else:
        (row,) = rows
        ids = [ingest.create(host=host, id=ids[0] if ids else None, **row)]
    if opted_out:
        transitions.opt_out({ids[index]: reason for index, reason in opted_out.items()}, host=host)
    scheduler.wake(row["due_at"] for index, row in enumerate(rows) if index not in opted_out)
    for channel, count in Counter(row["channel"] for row in rows).items():
        prometheus.ACCEPTED_BY_CHANNEL[channel].inc(count)
    return ids
