"""Web Push and UnifiedPush: RFC 8030 delivery, RFC 8291 ``aes128gcm`` encryption, RFC 8292 VAPID.

http_ece encrypts and py_vapid signs, the two libraries pywebpush is made of; pywebpush itself is not
used, because importing it loads aiohttp (0.5 s and 23 MB in every process) and because its POST
would follow redirects and read any size of answer. The endpoint is a URL a client chose: it is
checked before each send and again on the address actually connected to, redirects are never
followed, and no more than a little of an answer is read.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit

import http_ece
import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

import settings
from actors.providers import endpoints
from actors.providers.base import (
    Device,
    DeviceGone,
    Envelope,
    NotConfigured,
    PermanentDeliveryError,
    PushMessage,
    TransientDeliveryError,
)
from actors.providers.sessions import ThreadSessions
from actors.providers.webhook import parse_retry_after, push_payload

logger = logging.getLogger(__name__)

#: Push services must take 4,096 bytes of encrypted body (RFC 8030 7.2); RFC 8291's aes128gcm adds 86
#: bytes of header (salt, record size, our 65-byte key), a padding delimiter and a 16-byte tag.
MAX_PAYLOAD_BYTES = 4096 - 86 - 1 - 16
#: RFC 8292 allows 24 hours; less leaves room for a push service whose clock runs ahead.
VAPID_LIFETIME = 12 * 3600
# An answer is a status and a few headers; more than this much body is not worth reading.
_MAX_ANSWER = 64 * 1024
_GONE_STATUSES = {
    404: "the subscription does not exist",
    410: "the subscription has expired or was unsubscribed",
    403: "the subscription is bound to another VAPID key",
}


def payload_bytes(message: PushMessage) -> bytes:
    """The JSON a device receives: the document the webhook sends, compact, UTF-8."""
    envelope = Envelope(
        message.notification_id,
        "push",
        message.recipient_id,
        message.content,
        title=message.title,
        data=message.data,
    )
    return json.dumps(push_payload(envelope), separators=(",", ":"), ensure_ascii=False).encode()


def encrypt(payload: bytes, p256dh: str, auth: str) -> bytes:
    """RFC 8291: ``payload`` as one aes128gcm record, for the subscription's public key and secret."""
    # A new sender key for every message: the key exchange is what makes each message's key.
    return http_ece.encrypt(
        payload,
        private_key=ec.generate_private_key(ec.SECP256R1()),
        dh=_unb64url(p256dh),
        auth_secret=_unb64url(auth),
        version="aes128gcm",
    )


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class WebPushSender:
    """Sends to Web Push and UnifiedPush endpoints, signed with one VAPID key."""

    def __init__(
        self,
        kind: str = "webpush",
        *,
        key_file: str,
        subject: str,
        allowlist: Collection[str] = frozenset(),
        timeout: float = 10.0,
    ) -> None:
        self.kind = kind
        self.subject = subject
        self.allowlist = frozenset(allowlist)
        self.timeout = timeout
        self._vapid = load_vapid_key(key_file)
        self._sessions = ThreadSessions(lambda: guarded_session(self.allowlist))

    def __repr__(self) -> str:
        return f"WebPushSender({self.kind})"

    def send(self, device: Device, message: PushMessage) -> str:
        """POST one encrypted message; returns the push service's ``Location`` for it."""
        origin = _origin(device.address)
        try:
            endpoints.check(device.address, self.allowlist)
        except endpoints.UnsafeEndpoint as exc:
            raise PermanentDeliveryError(f"{origin}: refused: {exc}") from None
        if not device.p256dh or not device.auth:
            raise PermanentDeliveryError(f"{origin}: the subscription has no p256dh and auth keys")
        body = payload_bytes(message)
        if len(body) > MAX_PAYLOAD_BYTES:
            raise PermanentDeliveryError(
                f"payload is {len(body)} bytes of JSON; Web Push carries at most {MAX_PAYLOAD_BYTES}"
            )
        try:
            encrypted = encrypt(body, device.p256dh, device.auth)
        except (ValueError, http_ece.ECEException) as exc:  # a key that is no P-256 point, or no base64
            raise PermanentDeliveryError(f"{origin}: bad subscription keys: {exc!r}") from None
        # A fresh claims dict each time: signing libraries write aud and exp into the one they get.
        claims = {"aud": origin, "exp": int(time.time()) + VAPID_LIFETIME, "sub": self.subject}
        headers = {
            **self._vapid.sign(claims),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(message.ttl),
            "Urgency": message.urgency,
        }
        if message.collapse_key:
            headers["Topic"] = message.collapse_key
        status, answer, text = self._post(device.address, origin, encrypted, headers)
        if 200 <= status <= 202:
            location = answer.get("Location", "")
            logger.debug(
                "Sent %s to device %s via %s (%s)", message.notification_id, device.id, origin, status
            )
            return location
        reason = f"{origin}: HTTP {status} {text[:200]}".rstrip()
        if status in _GONE_STATUSES:
            raise DeviceGone(f"{reason} ({_GONE_STATUSES[status]})")
        if status == 429 or 500 <= status <= 599:
            raise TransientDeliveryError(reason, retry_after=parse_retry_after(answer.get("Retry-After")))
        if 300 <= status <= 399:
            raise PermanentDeliveryError(
                f"{reason}: redirects to {answer.get('Location')!r} are not followed"
            )
        raise PermanentDeliveryError(reason)

    def close(self) -> None:
        """Close every thread's kept connections."""
        self._sessions.close()

    def _post(
        self, url: str, origin: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, requests.structures.CaseInsensitiveDict[str], str]:
        try:
            response = self._sessions.get().post(
                url, data=body, headers=headers, timeout=self.timeout, allow_redirects=False, stream=True
            )
            with response:
                # Reading to the end gives the connection back for reuse; a longer answer drops it.
                text = response.raw.read(_MAX_ANSWER, decode_content=True).decode("utf-8", "replace")
                return response.status_code, response.headers, text
        except endpoints.UnsafeEndpoint as exc:  # the name resolved anew to another address
            raise PermanentDeliveryError(f"{origin}: refused: {exc}") from None
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise TransientDeliveryError(f"POST {origin}: {exc!r}") from None
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise PermanentDeliveryError(f"POST {origin}: {exc!r}") from None


def _origin(url: str) -> str:
    """scheme://host[:port]: the VAPID audience, and what may be logged of a capability URL."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    except ValueError:
        return "(unparsable endpoint)"


# --- Connections only to public addresses --------------------------------------------------------


class _PublicPeerOnly(urllib3.connection.HTTPConnection):
    """Refuses, once connected, a peer that is not public: the name may resolve anew to another address
    than the one ``endpoints.check`` saw (DNS rebinding)."""

    allowlist: frozenset[str] = frozenset()

    def _new_conn(self) -> Any:
        sock = super()._new_conn()
        host = (self.host or "").lower().strip("[]")
        if host not in self.allowlist:
            peer = ipaddress.ip_address(str(sock.getpeername()[0]).split("%", 1)[0])
            if not endpoints.is_public(peer):
                sock.close()
                raise endpoints.UnsafeEndpoint(f"{host} connected to {peer}, which is not a public address.")
        return sock


class _PublicPeerOnlyTLS(_PublicPeerOnly, urllib3.connection.HTTPSConnection):
    pass


class _GuardedAdapter(requests.adapters.HTTPAdapter):
    """An adapter whose connections check their peer, and which never retries by itself."""

    def __init__(self, allowlist: frozenset[str]) -> None:
        self._allowlist = allowlist
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        attributes = {"allowlist": self._allowlist}
        plain = type("PublicPeerOnly", (_PublicPeerOnly,), attributes)
        tls = type("PublicPeerOnlyTLS", (_PublicPeerOnlyTLS,), attributes)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("Pool", (urllib3.connectionpool.HTTPConnectionPool,), {"ConnectionCls": plain}),
            "https": type("TLSPool", (urllib3.connectionpool.HTTPSConnectionPool,), {"ConnectionCls": tls}),
        }


def guarded_session(allowlist: frozenset[str]) -> requests.Session:
    """A session reaching only public addresses or the hosts in ``allowlist``; it reads no environment."""
    session = requests.Session()
    # No proxy, .netrc or CA bundle from the environment: a proxy would hide the peer checked above,
    # and .netrc would hand credentials to whatever host a client named.
    session.trust_env = False
    session.headers["User-Agent"] = "notification-service"
    adapter = _GuardedAdapter(allowlist)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# --- The VAPID key ---------------------------------------------------------------------------------

_keys: dict[str, Vapid02] = {}
_keys_lock = threading.Lock()


def load_vapid_key(path: str) -> Vapid02:
    """The VAPID key in ``path`` (PEM, EC P-256), created there first if the file does not exist."""
    with _keys_lock:
        key = _keys.get(path)
        if key is None:
            key = _keys[path] = _read_or_create_key(path)
        return key


def vapid_public_key(key_file: str | None = None) -> str:
    """The VAPID public key as browsers take it for ``applicationServerKey``: base64url, uncompressed.

    Of ``VAPID_PRIVATE_KEY_FILE`` unless ``key_file`` names another; the key is created if missing.
    """
    point = load_vapid_key(key_file or settings.VAPID_PRIVATE_KEY_FILE).public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(point).rstrip(b"=").decode()


def _read_or_create_key(path: str) -> Vapid02:
    try:
        with open(path, "rb") as file:
            pem = file.read()
    except FileNotFoundError:
        pem = _create_key_file(path)
    except OSError as exc:
        raise NotConfigured(f"VAPID_PRIVATE_KEY_FILE {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise NotConfigured(f"VAPID_PRIVATE_KEY_FILE {path} is not an unencrypted PEM key: {exc}") from None
    if not (isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)):
        raise NotConfigured(f"VAPID_PRIVATE_KEY_FILE {path} is not an EC P-256 key")
    # Strict mode would judge VAPID_SUBJECT again, by a narrower rule than settings.py already did.
    return Vapid02(key, conf={"no-strict": True})


def _create_key_file(path: str) -> bytes:
    """Write a new key to ``path`` unless another process does first; either way, return the one there.

    The key is written whole to a temporary file that is then hard-linked into place: the link fails
    when ``path`` exists, so exactly one process's key wins and no reader ever sees half a file.
    """
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".vapid-", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(pem)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
            logger.info("Created the VAPID key %s", path)
        except FileExistsError:
            pass
    finally:
        os.unlink(temporary)
    with open(path, "rb") as file:
        return file.read()
