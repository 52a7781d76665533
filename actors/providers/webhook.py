"""Push notifications as a JSON POST to a webhook, over one kept-alive connection per thread, pipelined."""

from __future__ import annotations

import base64
import json
import logging
import re
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from actors.providers import http1
from actors.providers.base import DeliveryError, Envelope, PermanentDeliveryError, TransientDeliveryError

logger = logging.getLogger(__name__)

# Statuses that say "not now" rather than "never".
_TRANSIENT_STATUSES = frozenset({408, 429})
# What a kept-alive connection the server already closed looks like on the next request.
_STALE_CONNECTION_ERRORS = (http1.ConnectionClosed, ConnectionResetError, BrokenPipeError)
# More than this much response body is not worth reading; the connection is dropped instead.
_MAX_BODY = 64 * 1024


def push_payload(envelope: Envelope) -> dict[str, Any]:
    """The JSON document a push notification is sent as."""
    return {
        "notification_id": envelope.notification_id,
        "recipient_id": envelope.recipient_id,
        "content": envelope.content,
        "title": envelope.title,
        "data": envelope.data,
    }


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None when absent or garbage."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]{1,10}", value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP-dates are GMT by definition
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class WebhookProvider:
    """POSTs each push notification as JSON to one http(s) URL."""

    name = "webhook"

    def __init__(self, url: str, timeout: float, ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook URL must be http:// or https:// with a host, got {url!r}")
        # Without the credentials, so it can be logged.
        netloc = parts.netloc.rpartition("@")[2]
        self.url = f"{parts.scheme}://{netloc}{parts.path}"
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.timeout = timeout
        self.ssl_context = ssl_context
        if parts.scheme == "https" and ssl_context is None:
            self.ssl_context = ssl.create_default_context()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # Everything but the per-notification lines is the same for every request: written once.
        fixed = [
            f"POST {target} HTTP/1.1",
            f"Host: {netloc}",
            "Content-Type: application/json",
            "User-Agent: notification-service",
        ]
        # Credentials in the URL (https://user:pass@host/) become Basic auth rather than being dropped.
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            fixed.append("Authorization: Basic " + base64.b64encode(credentials.encode()).decode())
        self._head = "\r\n".join(fixed) + "\r\n"
        self._connections = http1.ThreadConnections(
            lambda scheme, host, port: http1.Connection(
                host, port, timeout=self.timeout, ssl_context=self.ssl_context
            )
        )

    def __repr__(self) -> str:
        return f"WebhookProvider({self.url})"

    def deliver(self, envelope: Envelope) -> None:
        """POST one notification; 2xx delivered, 408/429/5xx and network trouble transient."""
        error = self.deliver_many([envelope])[0]
        if error is not None:
            raise error

    def deliver_many(self, envelopes: Sequence[Envelope]) -> list[DeliveryError | None]:
        """POST several notifications, pipelined on this thread's connection: ``deliver``'s answer for each.

        The requests go at once and their answers are read in order. Those left unanswered because
        the server closed the connection, after an answer or (a kept-alive one) before any, are sent
        again on a new connection; the Idempotency-Key makes one more try safe.
        """
        requests = [self._request(envelope) for envelope in envelopes]
        connection = self._connections.get(self.scheme, self.host, self.port)
        outcomes: list[DeliveryError | None] = []
        while len(outcomes) < len(requests):
            done = len(outcomes)
            # Only a kept-alive connection can have been closed by the server meanwhile.
            reused = connection.is_open
            answers, error = connection.pipeline(requests[done:], max_body=_MAX_BODY)
            # Fewer answers than requests where the connection closed: the rest go again below.
            answered = zip(envelopes[done:], answers, strict=False)
            outcomes += [self._outcome(envelope, answer) for envelope, answer in answered]
            if answers or error is None:
                continue
            if reused and isinstance(error, _STALE_CONNECTION_ERRORS):
                logger.debug("Kept-alive connection of %r was closed; reconnecting", self)
                continue
            # Timeouts, refused connections and unreadable answers: the rest may pass later.
            for _ in range(len(requests) - len(outcomes)):
                failure = TransientDeliveryError(f"POST {self.url}: {error!r}")
                failure.__cause__ = error
                outcomes.append(failure)
        return outcomes

    def close(self) -> None:
        """Close every thread's kept-alive connection (they reopen on the next delivery)."""
        self._connections.close()

    def _request(self, envelope: Envelope) -> bytes:
        body = json.dumps(push_payload(envelope)).encode()
        # The Idempotency-Key is the notification id: a UUID, or at least text the API validated.
        head = (
            f"{self._head}Idempotency-Key: {envelope.notification_id}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode("latin-1", "replace") + body

    def _outcome(self, envelope: Envelope, response: http1.Response) -> DeliveryError | None:
        """None for a 2xx answer, else the error it is: transient for 408, 429 and 5xx."""
        status = response.status
        if 200 <= status <= 299:
            logger.debug("Delivered %s via %r (%s)", envelope.notification_id, self, status)
            return None
        text = response.body.decode("utf-8", "replace")
        reason = f"POST {self.url}: HTTP {status} {text[:200]}".rstrip()
        if status in _TRANSIENT_STATUSES or 500 <= status <= 599:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            return TransientDeliveryError(reason, retry_after=retry_after)
        return PermanentDeliveryError(reason)
