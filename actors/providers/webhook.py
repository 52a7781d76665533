"""Push notifications as a JSON POST to a webhook, over one kept-alive connection per thread."""

from __future__ import annotations

import base64
import json
import logging
import re
import ssl
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from actors.providers import http1
from actors.providers.base import Envelope, PermanentDeliveryError, TransientDeliveryError

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
        body = json.dumps(push_payload(envelope)).encode()
        # The Idempotency-Key is the notification id: a UUID, or at least text the API validated.
        head = (
            f"{self._head}Idempotency-Key: {envelope.notification_id}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        try:
            response = self._post(head.encode("latin-1", "replace"), body)
        except OSError as exc:  # includes timeouts, refused connections and unreadable answers
            raise TransientDeliveryError(f"POST {self.url}: {exc!r}") from exc
        status = response.status
        if 200 <= status <= 299:
            logger.debug("Delivered %s via %r (%s)", envelope.notification_id, self, status)
            return
        text = response.body.decode("utf-8", "replace")
        reason = f"POST {self.url}: HTTP {status} {text[:200]}".rstrip()
        if status in _TRANSIENT_STATUSES or 500 <= status <= 599:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            raise TransientDeliveryError(reason, retry_after=retry_after)
        raise PermanentDeliveryError(reason)

    def close(self) -> None:
        """Close every thread's kept-alive connection (they reopen on the next delivery)."""
        self._connections.close()

    def _post(self, head: bytes, body: bytes) -> http1.Response:
        connection = self._connections.get(self.scheme, self.host, self.port)
        # Only a kept-alive connection can have been closed by the server meanwhile.
        reused = connection.is_open
        try:
            try:
                return connection.request(head, body, max_body=_MAX_BODY)
            except _STALE_CONNECTION_ERRORS:
                if not reused:
                    raise
                # The server closed the idle connection; the Idempotency-Key makes one more try safe.
                logger.debug("Kept-alive connection of %r was closed; reconnecting", self)
                connection.close()
                return connection.request(head, body, max_body=_MAX_BODY)
        except BaseException:
            connection.close()  # its state is unknown; the next delivery starts afresh
            raise
