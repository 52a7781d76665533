"""Idempotent requests: one row per (client, Idempotency-Key), claimed by a single INSERT.

The unique key decides which of several concurrent retries runs the request; the others read the
response it stores. A row without a response is a request still in progress.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from storage.clock import utcnow
from storage.models import IdempotentRequest


@dataclass(frozen=True)
class Earlier:
    """The request that holds a key already: its hash and, once it has finished, its response."""

    request_hash: str
    status_code: int | None
    response_body: str | None


@dataclass(frozen=True)
class Claim:
    """A key taken for a request; ``resumed`` when an attempt of the same request died holding it."""

    id: int
    resumed: bool


def claim(client: str, key: str, request_hash: str, *, ttl: float, abandon_after: float) -> Claim | None:
    """Take ``key`` for a request and return the claim, or None when another request holds it.

    A holder older than ``ttl`` has expired, and one that stored no response within ``abandon_after``
    seconds died mid-request; either gives the key up to this claim. A dead holder of the same
    request is resumed (what it stored before it died is this request's), any other replaced.
    """
    now = utcnow()
    fresh = _insert(client, key, request_hash, now)  # the usual case: a key no request holds
    if fresh is not None:
        return fresh
    mine = (IdempotentRequest.client == client) & (IdempotentRequest.key == key)
    expired = IdempotentRequest.created_at < now - dt.timedelta(seconds=ttl)
    abandoned = IdempotentRequest.status_code.is_null() & (
        IdempotentRequest.created_at < now - dt.timedelta(seconds=abandon_after)
    )
    same_request = IdempotentRequest.request_hash == request_hash
    IdempotentRequest.delete().where(mine & (expired | (abandoned & ~same_request))).execute()
    # One statement: of several retries of a dead request, exactly one resumes it.
    resumed = list(
        IdempotentRequest.update(created_at=now)
        .where(mine & abandoned & same_request)
        .returning(IdempotentRequest.id)
        .tuples()
        .execute()
    )
    if resumed:
        return Claim(resumed[0][0], resumed=True)
    return _insert(client, key, request_hash, now)


def _insert(client: str, key: str, request_hash: str, now: dt.datetime) -> Claim | None:
    rows = list(
        IdempotentRequest.insert(client=client, key=key, request_hash=request_hash, created_at=now)
        .on_conflict_ignore()
        .returning(IdempotentRequest.id)
        .tuples()
        .execute()
    )
    return Claim(rows[0][0], resumed=False) if rows else None


def earlier(client: str, key: str, *, ttl: float) -> Earlier | None:
    """The request holding ``key`` made within ``ttl`` seconds, or None when it has gone since."""
    newer = IdempotentRequest.created_at >= utcnow() - dt.timedelta(seconds=ttl)
    row = (
        IdempotentRequest.select(
            IdempotentRequest.request_hash, IdempotentRequest.status_code, IdempotentRequest.response_body
        )
        .where((IdempotentRequest.client == client) & (IdempotentRequest.key == key) & newer)
        .tuples()
        .first()
    )
    return None if row is None else Earlier(*row)


def complete(claim_id: int, status_code: int, response_body: str) -> None:
    IdempotentRequest.update(status_code=status_code, response_body=response_body).where(
        IdempotentRequest.id == claim_id
    ).execute()


def release(claim_id: int) -> None:
    """Give the key up again: the request ended without a response worth replaying."""
    IdempotentRequest.delete().where(IdempotentRequest.id == claim_id).execute()


def forget_expired(ttl: float) -> int:
    """Delete the requests made more than ``ttl`` seconds ago; returns how many went."""
    cutoff = utcnow() - dt.timedelta(seconds=ttl)
    return IdempotentRequest.delete().where(IdempotentRequest.created_at < cutoff).execute()
