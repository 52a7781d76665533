"""Web Push and UnifiedPush: RFC 8030 delivery, RFC 8291 ``aes128gcm`` encryption, RFC 8292 VAPID.

py_vapid signs, one of the two libraries pywebpush is made of (the other, http_ece, is what the
encryption here is tested against). pywebpush itself is not used, because importing it loads
aiohttp (0.5 s and 23 MB in every process) and because its POST would follow redirects and read
any size of answer. The endpoint is a URL a client chose: its form
is checked before each send, and each connection goes only to an address that was judged public
when it was made; redirects are never followed, and no more than a little of an answer is read.
The POST goes over the service's own HTTP/1.1 client (``http1``), one kept connection per push
service and thread: through ``requests`` it took two thirds of a delivery's time.
"""

from __future__ import annotations

import base64
import functools
import hmac
import json
import logging
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Collection
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from py_vapid import Vapid02

import settings
from actors.providers import endpoints, http1
from actors.providers.base import (
    Device,
    DeviceGone,
    Envelope,
    NotConfigured,
    PermanentDeliveryError,
    PushMessage,
    TransientDeliveryError,
)
from actors.providers.webhook import parse_retry_after, push_payload

logger = logging.getLogger(__name__)

#: Push services must take 4,096 bytes of encrypted body (RFC 8030 7.2); RFC 8291's aes128gcm adds 86
#: bytes of header (salt, record size, our 65-byte key), a padding delimiter and a 16-byte tag.
MAX_PAYLOAD_BYTES = 4096 - 86 - 1 - 16
#: RFC 8292 allows 24 hours; less leaves room for a push service whose clock runs ahead.
VAPID_LIFETIME = 12 * 3600
# A signed JWT serves every message to its push service until this little of its lifetime is left:
# signing one per message cost a twentieth of a delivery.
_VAPID_RENEW_BEFORE = VAPID_LIFETIME // 2
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


def encrypt(
    payload: bytes,
    p256dh: str,
    auth: str,
    *,
    sender_key: ec.EllipticCurvePrivateKey | None = None,
    salt: bytes | None = None,
) -> bytes:
    """RFC 8291: ``payload`` as one aes128gcm record (RFC 8188), for the subscription's key and secret.

    Written here rather than called from http_ece, which took 0.26 ms of CPU a message against
    0.17 ms for this (a quarter of a worker's CPU per Web Push delivery); the key exchange and the new
    key of each message are most of what is left. ``sender_key`` and ``salt`` are for tests: each
    message gets a new key and salt, as the key exchange is what makes each message's key.
    """
    secret = _unb64url(auth)
    if len(secret) != 16:
        raise ValueError(f"auth is {len(secret)} bytes, not 16")
    receiver = _unb64url(p256dh)
    key = sender_key or ec.generate_private_key(ec.SECP256R1())
    sender = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    shared = key.exchange(ec.ECDH(), _public_key(receiver))
    # HKDF-SHA-256 (RFC 5869), each output at most one hash long: extract, then one expand block.
    ikm = _hmac(_hmac(secret, shared), b"WebPush: info\x00" + receiver + sender + b"\x01")
    salt = salt or os.urandom(16)
    prk = _hmac(salt, ikm)
    content_key = _hmac(prk, b"Content-Encoding: aes128gcm\x00\x01")[:16]
    nonce = _hmac(prk, b"Content-Encoding: nonce\x00\x01")[:12]
    # One record, the last (delimiter 2), unpadded; the record size is what http_ece writes.
    header = salt + _RECORD_SIZE + bytes([len(sender)]) + sender
    return header + AESGCM(content_key).encrypt(nonce, payload + b"\x02", None)


_RECORD_SIZE = (4096).to_bytes(4, "big")


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, "sha256")


@functools.lru_cache(maxsize=4096)
def _public_key(point: bytes) -> ec.EllipticCurvePublicKey:
    """A subscription's public key: checked to be a point on P-256 once, not for every message."""
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)


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
        # By audience: the Authorization header and when its JWT expires.
        self._signed: dict[str, tuple[str, int]] = {}
        # The system's trust store only: no CA bundle, proxy or .netrc from the environment, which
        # would hide the peer checked or hand credentials to whatever host a client named.
        self._tls = ssl.create_default_context()
        self._connections = http1.ThreadConnections(self._connection)

    def __repr__(self) -> str:
        return f"WebPushSender({self.kind})"

    def send(self, device: Device, message: PushMessage) -> str:
        """POST one encrypted message; returns the push service's ``Location`` for it."""
        origin = _origin(device.address)
        try:
            host, port, _ = endpoints.check_form(device.address, self.allowlist)
        except endpoints.UnsafeEndpoint as exc:
            raise PermanentDeliveryError(f"{origin}: refused: {exc}") from None
        target = _target(device.address)
        if target is None or not _writable(origin):
            raise PermanentDeliveryError(
                f"{origin}: refused: the URL holds what a request cannot (non-ASCII, spaces, controls)"
            )
        if not device.p256dh or not device.auth:
            raise PermanentDeliveryError(f"{origin}: the subscription has no p256dh and auth keys")
        body = payload_bytes(message)
        if len(body) > MAX_PAYLOAD_BYTES:
            raise PermanentDeliveryError(
                f"payload is {len(body)} bytes of JSON; Web Push carries at most {MAX_PAYLOAD_BYTES}"
            )
        try:
            encrypted = encrypt(body, device.p256dh, device.auth)
        except ValueError as exc:  # a key that is no P-256 point, an auth not 16 bytes, or no base64
            raise PermanentDeliveryError(f"{origin}: bad subscription keys: {exc!r}") from None
        head = (
            f"POST {target} HTTP/1.1\r\nHost: {origin.partition('://')[2]}\r\n"
            f"Authorization: {self._authorization(origin)}\r\n"
            "Content-Encoding: aes128gcm\r\nContent-Type: application/octet-stream\r\n"
            f"TTL: {message.ttl}\r\nUrgency: {message.urgency}\r\n"
            + (f"Topic: {message.collapse_key}\r\n" if message.collapse_key else "")
            + f"User-Agent: notification-service\r\nContent-Length: {len(encrypted)}\r\n\r\n"
        )
        scheme = "https" if origin.startswith("https:") else "http"
        connection = self._connections.get(scheme, host, port)
        try:
            answer = connection.request(head.encode("ascii"), encrypted, max_body=_MAX_ANSWER)
        except endpoints.UnsafeEndpoint as exc:
            raise PermanentDeliveryError(f"{origin}: refused: {exc}") from None
        except OSError as exc:  # timeouts, refused or reset connections, answers that are not HTTP
            raise TransientDeliveryError(f"POST {origin}: {exc!r}") from None
        status = answer.status
        if 200 <= status <= 202:
            logger.debug(
                "Sent %s to device %s via %s (%s)", message.notification_id, device.id, origin, status
            )
            return answer.headers.get("location", "")
        text = answer.body.decode("utf-8", "replace")
        reason = f"{origin}: HTTP {status} {text[:200]}".rstrip()
        if status in _GONE_STATUSES:
            raise DeviceGone(f"{reason} ({_GONE_STATUSES[status]})")
        if status == 429 or 500 <= status <= 599:
            raise TransientDeliveryError(
                reason, retry_after=parse_retry_after(answer.headers.get("retry-after"))
            )
        if 300 <= status <= 399:
            raise PermanentDeliveryError(
                f"{reason}: redirects to {answer.headers.get('location')!r} are not followed"
            )
        raise PermanentDeliveryError(reason)

    def close(self) -> None:
        """Close every thread's kept connections."""
        self._connections.close()

    def _authorization(self, audience: str) -> str:
        """The VAPID header for ``audience``, signed anew only when the last one is half spent."""
        now = int(time.time())
        signed = self._signed.get(audience)
        if signed is None or signed[1] - now < _VAPID_RENEW_BEFORE:
            # A fresh claims dict each time: signing libraries write aud and exp into the one they get.
            expires = now + VAPID_LIFETIME
            claims = {"aud": audience, "exp": expires, "sub": self.subject}
            signed = (str(self._vapid.sign(claims)["Authorization"]), expires)
            self._signed[audience] = signed
        return signed[0]

    def _connection(self, scheme: str, host: str, port: int) -> http1.Connection:
        allowed = host in self.allowlist
        return http1.Connection(
            host,
            port,
            timeout=self.timeout,
            ssl_context=self._tls if scheme == "https" else None,
            connect=lambda host, port, timeout: endpoints.connect(host, port, timeout, allowed=allowed),
        )


def _origin(url: str) -> str:
    """scheme://host[:port]: the VAPID audience, and what may be logged of a capability URL."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    except ValueError:
        return "(unparsable endpoint)"


def _target(url: str) -> str | None:
    """The request target (path and query) of ``url``; None when it holds what a request line cannot."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return target if _writable(target) else None


def _writable(text: str) -> bool:
    """Whether ``text`` may stand as it is in a request line or a Host header."""
    return text.isascii() and text.isprintable() and " " not in text


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
