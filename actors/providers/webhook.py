"""Push notifications as a JSON POST to a webhook, over one kept-alive connection per thread."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import ssl
import threading
import weakref
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from actors.providers import Envelope, PermanentDeliveryError, TransientDeliveryError

logger = logging.getLogger(__name__)

# Statuses that say "not now" rather than "never".
_TRANSIENT_STATUSES = frozenset({408, 429})
# What a kept-alive connection the server already closed looks like on the next request.
_STALE_CONNECTION_ERRORS = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
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


class _ThreadConnection:
    """Holds one thread's connection and closes it when the thread ends (no socket left to the GC)."""

    def __init__(self, connection: http.client.HTTPConnection) -> None:
        self.connection = connection

    def __del__(self) -> None:
        self.connection.close()


class WebhookProvider:
    """POSTs each push notification as JSON to one http(s) URL."""

    name = "webhook"

    def __init__(self, url: str, timeout: float, ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook URL must be http:// or https:// with a host, got {url!r}")
        # Without the credentials, so it can be logged.
        self.url = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.timeout = timeout
        self.ssl_context = ssl_context
        # Credentials in the URL (https://user:pass@host/) become Basic auth rather than being dropped.
        self._authorization = None
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self._authorization = "Basic " + base64.b64encode(credentials.encode()).decode()
        self._local = threading.local()
        # Lets close() reach every thread's connection; weak, so a finished thread's one can go.
        self._all: weakref.WeakSet[_ThreadConnection] = weakref.WeakSet()
        self._all_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"WebhookProvider({self.url})"

    def deliver(self, envelope: Envelope) -> None:
        """POST one notification; 2xx delivered, 408/429/5xx and network trouble transient."""
        body = json.dumps(push_payload(envelope)).encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": envelope.notification_id,
            "User-Agent": "notification-service",
        }
        if self._authorization:
            headers["Authorization"] = self._authorization
        try:
            status, retry_after, text = self._post(body, headers)
        except (OSError, http.client.HTTPException) as exc:  # includes timeouts and refused connections
            raise TransientDeliveryError(f"POST {self.url}: {exc!r}") from exc
        if 200 <= status <= 299:
            logger.debug("Delivered %s via %r (%s)", envelope.notification_id, self, status)
            return
        reason = f"POST {self.url}: HTTP {status} {text[:200]}".rstrip()
        if status in _TRANSIENT_STATUSES or 500 <= status <= 599:
            raise TransientDeliveryError(reason, retry_after=parse_retry_after(retry_after))
        raise PermanentDeliveryError(reason)

    def close(self) -> None:
        """Close every thread's kept-alive connection (they reopen on the next delivery)."""
        with self._all_lock:
            holders = list(self._all)
        for holder in holders:
            holder.connection.close()

    def _connection(self) -> http.client.HTTPConnection:
        holder: _ThreadConnection | None = getattr(self._local, "holder", None)
        if holder is None:
            connection: http.client.HTTPConnection
            if self.scheme == "https":
                connection = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=self.ssl_context
                )
            else:
                connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            holder = _ThreadConnection(connection)
            self._local.holder = holder
            with self._all_lock:
                self._all.add(holder)
        return holder.connection

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str | None, str]:
        connection = self._connection()
        # A closed HTTPConnection (no sock) reopens itself on request(); only a kept-alive one can be stale.
        reused = connection.sock is not None
        try:
            try:
                return self._exchange(connection, body, headers)
            except _STALE_CONNECTION_ERRORS:
                if not reused:
                    raise
                # The server closed the idle connection; the Idempotency-Key makes one more try safe.
                logger.debug("Kept-alive connection of %r was closed; reconnecting", self)
                connection.close()
                return self._exchange(connection, body, headers)
        except BaseException:
            connection.close()  # its state is unknown; the next delivery starts afresh
            raise

    def _exchange(
        self, connection: http.client.HTTPConnection, body: bytes, headers: dict[str, str]
    ) -> tuple[int, str | None, str]:
        connection.request("POST", self.target, body=body, headers=headers)
        response = connection.getresponse()
        text = response.read(_MAX_BODY)
        if not response.isclosed():
            # An unread remainder would poison the next request on this connection.
            connection.close()
        return response.status, response.getheader("Retry-After"), text.decode("utf-8", "replace")
