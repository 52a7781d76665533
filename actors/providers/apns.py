"""Apple Push Notification service: the HTTP/2 provider API with token-based authentication."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from actors.providers.base import (
    Device,
    DeviceGone,
    NotConfigured,
    PermanentDeliveryError,
    PushMessage,
    TransientDeliveryError,
    http_failure,
)
from actors.providers.webhook import parse_retry_after

logger = logging.getLogger(__name__)
# httpx logs every request at INFO, device token and all; a send is logged once, by the delivery.
logging.getLogger("httpx").setLevel(logging.WARNING)

#: APNs answers 429 TooManyProviderTokenUpdates to a new token within 20 minutes, and refuses one
#: older than 60: a token is used for 40.
TOKEN_REFRESH = 40 * 60
MAX_PAYLOAD_BYTES = 4096
_DEVICE_TOKEN = re.compile(r"[0-9a-fA-F]{64,200}")
_GONE_REASONS = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic"})


def payload(message: PushMessage) -> dict[str, Any]:
    """The JSON document a device receives."""
    alert = {"body": message.content}
    if message.title is not None:
        alert = {"title": message.title, **alert}
    document: dict[str, Any] = {"aps": {"alert": alert}, "notification_id": message.notification_id}
    if message.data is not None:
        document["data"] = message.data
    return document


class ApnsSender:
    """Sends to APNs device tokens of one app (``topic``), production or sandbox as each device says."""

    kind = "apns"

    def __init__(
        self,
        *,
        key_file: str,
        key_id: str,
        team_id: str,
        topic: str,
        url: str = "https://api.push.apple.com",
        sandbox_url: str = "https://api.sandbox.push.apple.com",
        ca_file: str = "",
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        try:
            with open(key_file, "rb") as file:
                key = serialization.load_pem_private_key(file.read(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise NotConfigured(f"APNS_KEY_FILE {key_file} is no readable .p8 key: {exc}") from None
        if not (isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)):
            raise NotConfigured(f"APNS_KEY_FILE {key_file} is not an EC P-256 key")
        self._key = key
        self.key_id = key_id
        self.team_id = team_id
        self.topic = topic
        self.timeout = timeout
        self._clock = clock
        self._urls = {"production": url.rstrip("/"), "sandbox": sandbox_url.rstrip("/")}
        self._ssl = ssl.create_default_context()
        if ca_file:
            self._ssl.load_verify_locations(ca_file)  # trusted besides the system's
        self._lock = threading.Lock()
        self._token: tuple[str, float] | None = None  # the provider token and when it was made
        self._clients: dict[str, httpx.Client] = {}
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"ApnsSender({self.topic})"

    def send(self, device: Device, message: PushMessage) -> str:
        """POST one notification; returns its ``apns-id``."""
        if not _DEVICE_TOKEN.fullmatch(device.address):
            raise PermanentDeliveryError("APNs: the device token is not 64-200 hex digits")
        base_url = self._urls.get(device.environment or "production")
        if base_url is None:
            raise PermanentDeliveryError(
                f"APNs: no environment {device.environment!r} (production or sandbox)"
            )
        body = json.dumps(payload(message), separators=(",", ":"), ensure_ascii=False).encode()
        if len(body) > MAX_PAYLOAD_BYTES:
            raise PermanentDeliveryError(
                f"payload is {len(body)} bytes; APNs takes at most {MAX_PAYLOAD_BYTES}"
            )
        headers = {
            "authorization": f"bearer {self._provider_token()}",
            "apns-topic": self.topic,
            "apns-push-type": "alert",
            "apns-priority": "5" if message.urgency in ("low", "very-low") else "10",
            # 0: deliver now or never; else keep it until then for a device that is offline.
            "apns-expiration": str(int(self._clock()) + message.ttl) if message.ttl else "0",
        }
        if message.collapse_key:
            headers["apns-collapse-id"] = message.collapse_key
        try:
            response = self._client(base_url).post(
                f"{base_url}/3/device/{device.address}", content=body, headers=headers
            )
        except httpx.TransportError as exc:  # timeouts, refused or dropped connections, HTTP/2 errors
            raise TransientDeliveryError(f"APNs: {exc!r}") from None
        status = response.status_code
        if status == 200:
            logger.debug("Sent %s to device %s via APNs", message.notification_id, device.id)
            return response.headers.get("apns-id", "")
        document = _json(response)
        why = str(document.get("reason", ""))
        reason = f"APNs: HTTP {status} {why}".rstrip()
        if status == 410:
            unregistered = _from_millis(document.get("timestamp"))
            if device.last_seen_at and unregistered and device.last_seen_at > unregistered:
                raise PermanentDeliveryError(
                    f"{reason} since {unregistered:%Y-%m-%d %H:%M:%S}, but the device registered again later"
                )
            raise DeviceGone(reason)
        if status == 400 and why in _GONE_REASONS:
            raise DeviceGone(reason)
        if status == 403:
            logger.error(
                "APNs refused our provider token (check APNS_KEY_FILE, APNS_KEY_ID, APNS_TEAM_ID): %s", reason
            )
            raise TransientDeliveryError(reason)
        raise http_failure(status, reason, parse_retry_after(response.headers.get("retry-after")))

    def close(self) -> None:
        """Close the kept connections (they reopen on the next send)."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def _provider_token(self) -> str:
        now = self._clock()
        with self._lock:
            if self._token is None or now - self._token[1] >= TOKEN_REFRESH:
                claims = {"iss": self.team_id, "iat": int(now)}
                self._token = (
                    jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self.key_id}),
                    now,
                )
            return self._token[0]

    def _client(self, base_url: str) -> httpx.Client:
        """The process's HTTP/2 connection to ``base_url``; a forked child makes its own."""
        with self._lock:
            if self._pid != os.getpid():
                # The parent's connections are the parent's: the child drops them without closing.
                self._clients, self._pid = {}, os.getpid()
            client = self._clients.get(base_url)
            if client is None:
                client = httpx.Client(http1=False, http2=True, verify=self._ssl, timeout=self.timeout)
                self._clients[base_url] = client
            return client


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        document = response.json()
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _from_millis(value: object) -> dt.datetime | None:
    """APNs' timestamp (milliseconds since the epoch) as naive UTC, like ``Device.last_seen_at``."""
    if not isinstance(value, int | float):
        return None
    return dt.datetime.fromtimestamp(value / 1000, dt.UTC).replace(tzinfo=None)
