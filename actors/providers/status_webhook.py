"""Status events POSTed to the operator's URL, signed as the Standard Webhooks specification says."""

from __future__ import annotations

import datetime as dt
import ssl
from urllib.parse import urlsplit

from standardwebhooks.webhooks import Webhook

from actors.providers import http1
from actors.providers.base import TransientDeliveryError
from actors.providers.webhook import parse_retry_after

_MAX_BODY = 64 * 1024


class StatusWebhook:
    """POSTs signed events to one URL; any 2xx is taken, anything else (a redirect too) is transient."""

    def __init__(self, url: str, secret: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.url = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.netloc = parts.netloc.rpartition("@")[2]
        self.timeout = timeout
        self.tls = parts.scheme == "https"
        self.signer = Webhook(secret)

    def __repr__(self) -> str:
        return f"StatusWebhook({self.url})"

    def send(self, webhook_id: str, body: str, *, now: dt.datetime | None = None) -> int:
        """POST one event; return the status of the 2xx answer, else raise ``TransientDeliveryError``."""
        timestamp = now or dt.datetime.now(dt.UTC)
        signature = self.signer.sign(webhook_id, timestamp, body)
        payload = body.encode()
        head = (
            f"POST {self.target} HTTP/1.1\r\nHost: {self.netloc}\r\nContent-Type: application/json\r\n"
            f"User-Agent: notification-service\r\nContent-Length: {len(payload)}\r\n"
            f"webhook-id: {webhook_id}\r\nwebhook-timestamp: {int(timestamp.timestamp())}\r\n"
            f"webhook-signature: {signature}\r\n\r\n"
        ).encode()
        connection = http1.Connection(
            self.host,
            self.port,
            timeout=self.timeout,
            ssl_context=ssl.create_default_context() if self.tls else None,
        )
        try:
            response = connection.request(head, payload, max_body=_MAX_BODY)
        except OSError as exc:
            raise TransientDeliveryError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            connection.close()
        if 200 <= response.status < 300:
            return response.status
        raise TransientDeliveryError(
            f"status webhook answered {response.status}",
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
