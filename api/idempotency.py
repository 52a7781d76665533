"""The Idempotency-Key header: a retried POST gets the original response and creates nothing new.

A request with a key claims (caller, key) with one INSERT; a concurrent retry finds the claim taken
and waits briefly for the response the first one stores, or answers 409. The request is recorded as
a hash of method, path and canonical JSON body, so the same key with another body is refused (422).
Only responses a view returned are kept; a request that ended in an error gives its key up again.
The notifications a request stores have ids derived from its key (see ``RequestKey``), so that the
retry of a request whose process died before keeping the response finds them, not makes more.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Response, current_app, g, request
from flask_smorest import Blueprint, abort

import storage
from api import auth
from storage import idempotency as store

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
TTL = 24 * 3600.0
# A claim without a response this old belongs to a process that died mid-request.
ABANDONED_AFTER = 60.0
# How long a retry waits for the concurrent original to finish before answering 409.
WAIT_FOR_ORIGINAL = 5.0
_POLL_INTERVAL = 0.02
_KEY = re.compile(r"[!-~]{1,255}")
# Expired rows are already ignored; deleting them now and then only keeps the table small.
_SWEEP_INTERVAL = 3600.0
_last_sweep = {"at": -_SWEEP_INTERVAL}
# Names the notification ids derived from idempotency keys (uuid5), apart from any other uuid5.
_NOTIFICATION_IDS = uuid.UUID("9c2f4a8e-5d1b-4c36-a0e7-3f6b8d2c1e54")

HEADER_DOC = {
    "in": "header",
    "name": HEADER,
    "required": False,
    "description": "Any unique string (a UUID, say): a retry with the same key and body within 24 hours "
    "gets the original response and creates nothing new.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
}


@dataclass(frozen=True)
class RequestKey:
    """An idempotent request, the same in each attempt of it: who sent it, with which key."""

    identity: str
    # When this attempt resumes one that died mid-request: what that one may have stored, it stored
    # since then (a key lives TTL seconds); None for the first attempt.
    resumed_since: dt.datetime | None

    def notification_ids(self, generation: int, count: int) -> list[str]:
        """The ids of ``count`` notifications for the ``generation``th use of the key.

        A key used again after it expired is a new request: it takes the next generation.
        """
        name = f"{self.identity}\n{generation}\n"
        return [str(uuid.uuid5(_NOTIFICATION_IDS, f"{name}{index}")) for index in range(count)]


def request_key() -> RequestKey | None:
    """The current request's key, when it is an idempotent request (see ``idempotent``)."""
    key: RequestKey | None = g.get("request_key")
    return key


def idempotent(blp: Blueprint) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Make a POST view honour Idempotency-Key, and document the header and its answers on ``blp``.

    Goes above ``@blp.arguments`` and ``@blp.response``, so that what it keeps is the final response.
    """

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            key = request.headers.get(HEADER)
            if key is None:
                return view(*args, **kwargs)
            if not _KEY.fullmatch(key):
                abort(422, errors={"headers": {HEADER: ["Must be 1 to 255 visible ASCII characters."]}})
            return _once(key, lambda: view(*args, **kwargs))

        documented = blp.doc(parameters=[HEADER_DOC])(wrapper)
        documented = blp.alt_response(409, description="A request with this Idempotency-Key is in progress")(
            documented
        )
        return blp.alt_response(422, response="UNPROCESSABLE_ENTITY")(documented)

    return decorator


def _once(key: str, run: Callable[[], Any]) -> Response:
    client, fingerprint = auth.caller(), _fingerprint()
    deadline = time.monotonic() + current_app.config.get("IDEMPOTENCY_WAIT", WAIT_FOR_ORIGINAL)
    _sweep()
    while True:
        claim = store.claim(client, key, fingerprint, ttl=TTL, abandon_after=ABANDONED_AFTER)
        if claim is not None:
            resumed_since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=TTL) if claim.resumed else None
            g.request_key = RequestKey(f"{client}\n{key}", resumed_since)
            return _run_and_keep(claim.id, run)
        earlier = store.earlier(client, key, ttl=TTL)
        if earlier is None:
            continue  # the holder gave the key up between our two statements: claim it again
        if earlier.request_hash != fingerprint:
            abort(422, errors={"headers": {HEADER: ["Already used for a different request."]}})
        if earlier.status_code is not None:
            replayed = current_app.response_class(
                earlier.response_body, status=earlier.status_code, mimetype="application/json"
            )
            replayed.headers["Idempotent-Replayed"] = "true"
            return replayed
        if time.monotonic() >= deadline:
            abort(409, message=f"A request with this {HEADER} is still in progress; retry later.")
        time.sleep(_POLL_INTERVAL)


def _run_and_keep(claim_id: int, run: Callable[[], Any]) -> Response:
    try:
        response = current_app.make_response(run())
    except BaseException:
        _release(claim_id)
        raise
    store.complete(claim_id, response.status_code, response.get_data(as_text=True))
    return response


def _sweep() -> None:
    now = time.monotonic()
    if now - _last_sweep["at"] < _SWEEP_INTERVAL:
        return
    _last_sweep["at"] = now
    removed = store.forget_expired(TTL)
    if removed:
        logger.info("Deleted %d expired idempotency keys", removed)


def _release(claim_id: int) -> None:
    try:
        store.release(claim_id)
    except storage.DATABASE_ERRORS as exc:
        # The error being raised matters more; an orphaned claim is given up after ABANDONED_AFTER.
        logger.warning("Could not release idempotency claim %s: %s", claim_id, exc)


def _fingerprint() -> str:
    """sha256 of method, path and the body as canonical JSON (the raw bytes if it is not JSON)."""
    body = request.get_data(cache=True)
    with contextlib.suppress(ValueError, RecursionError):
        body = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(f"{request.method} {request.path}\n".encode())
    digest.update(body)
    return digest.hexdigest()
