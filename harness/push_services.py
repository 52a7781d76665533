"""Real local push services for tests and benchmarks: Web Push, FCM (with its OAuth2 token endpoint), APNs.

Each checks what the real one checks (signatures, audiences, topics, encodings), keeps what it
accepted, and answers as scripted. All are context managers::

    with WebPushService() as push:
        subscription = push.subscribe()
        ...send to subscription.endpoint with subscription.p256dh / subscription.auth...
        push.wait_for(1)[0].json  # the decrypted payload
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import h2.config
import h2.connection
import h2.events
import http_ece
import jwt
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = [
    "ApnsService",
    "FcmService",
    "ReceivedApns",
    "ReceivedFcm",
    "ReceivedPush",
    "Refused",
    "Subscription",
    "WebPushService",
]

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
# google-auth signs every assertion for Google's endpoint, whatever token_uri the file names.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class _Script:
    """Answers queued by a test, each for ``times`` requests, then the service's normal answer."""

    def __init__(self) -> None:
        self._answers: deque[list[Any]] = deque()
        self._lock = threading.Lock()

    def push(self, answer: Any, times: int) -> None:
        with self._lock:
            self._answers.append([answer, times])

    def pop(self) -> Any | None:
        with self._lock:
            if not self._answers:
                return None
            entry = self._answers[0]
            entry[1] -= 1
            if entry[1] <= 0:
                self._answers.popleft()
            return entry[0]


class _Recorder:
    """What a service received, and a way to wait for it."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        #: Why requests were refused before their answer was scripted (bad signature, audience, ...).
        self.refusals: list[str] = []

    def refuse(self, reason: str) -> None:
        with self.condition:
            self.refusals.append(reason)
            self.condition.notify_all()

    def wait(self, predicate: Any, timeout: float, what: str) -> None:
        with self.condition:
            if not self.condition.wait_for(predicate, timeout):
                raise TimeoutError(f"waited {timeout}s for {what}")


class _HttpService(_Recorder):
    """A threaded HTTP/1.1 server on 127.0.0.1 whose handler calls ``self.handle``."""

    def __init__(self) -> None:
        super().__init__()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        #: TCP connections accepted: requests over a kept-alive connection do not add to it.
        self.connections = 0
        self._open: set[socket.socket] = set()

    @property
    def origin(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Any:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with service.condition:
                    service.connections += 1
                    service._open.add(self.connection)

            def finish(self) -> None:
                with service.condition:
                    service._open.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {name.lower(): value for name, value in self.headers.items()}
                status, answer_headers, answer = service.handle(self.path, headers, body)
                self.send_response(status)
                for name, value in answer_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A short poll makes stop() quick: shutdown() waits for the loop's next look.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=type(self).__name__
        )
        self._thread.start()
        return self

    def close_connections(self) -> None:
        """Close every open connection, as a server does to kept-alive connections gone idle."""
        with self.condition:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        raise NotImplementedError


# --- Web Push (RFC 8030, 8291, 8292) ---------------------------------------------------------------


@dataclass
class Subscription:
    """A browser's subscription, made by the test: the endpoint, its keys, and the private half."""

    id: str
    endpoint: str
    p256dh: str
    auth: str
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)

    def as_json(self) -> dict[str, Any]:
        """What ``PushSubscription.toJSON()`` gives in a browser."""
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": self.p256dh, "auth": self.auth},
        }


@dataclass
class ReceivedPush:
    """One push message that passed the checks: what came over the wire and what it decrypts to."""

    subscription_id: str
    headers: dict[str, str]  # names lowercased
    body: bytes  # as sent: aes128gcm
    payload: bytes  # decrypted
    claims: dict[str, Any]  # of the verified VAPID JWT
    vapid_key: str  # the k= of the Authorization header
    status: int  # what the service answered

    @property
    def json(self) -> Any:
        return json.loads(self.payload)


class Refused(Exception):
    """A message a push service refuses: the status it answers and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def decrypt(subscription: Subscription, body: bytes) -> bytes:
    """What the browser holding ``subscription`` reads of an ``aes128gcm`` body."""
    try:
        return http_ece.decrypt(
            body,
            private_key=subscription.private_key,
            auth_secret=_unb64url(subscription.auth),
            version="aes128gcm",
        )
    except Exception as exc:  # http_ece raises several kinds for a body it cannot decrypt
        raise Refused(400, f"cannot decrypt: {exc!r}") from None


class WebPushService(_HttpService):
    """A push service: verifies VAPID (signature with ``k``, ``aud`` its own origin, ``exp`` within 24 h),
    requires ``Content-Encoding: aes128gcm`` and ``TTL``, decrypts with the subscription's private key
    and answers 201 with a ``Location``, unless a test scripted another answer with ``answer_next``."""

    #: What RFC 8030 obliges a push service to accept; more is 413.
    MAX_BODY = 4096

    def __init__(self) -> None:
        super().__init__()
        self.received: list[ReceivedPush] = []
        self._subscriptions: dict[str, Subscription] = {}
        self._script = _Script()

    def subscribe(self) -> Subscription:
        """A new subscription on this service, as a browser would make it."""
        private_key = ec.generate_private_key(ec.SECP256R1())
        point = private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        sid = uuid.uuid4().hex
        subscription = Subscription(
            sid, f"{self.origin}/push/{sid}", _b64url(point), _b64url(os.urandom(16)), private_key
        )
        with self.condition:
            self._subscriptions[sid] = subscription
        return subscription

    def answer_next(self, status: int, headers: dict[str, str] | None = None, *, times: int = 1) -> None:
        """Answer the next ``times`` valid messages with ``status`` (e.g. 410, 429 with Retry-After, 307)."""
        self._script.push((status, headers or {}), times)

    def wait_for(self, count: int, timeout: float = 10) -> list[ReceivedPush]:
        """Block until at least ``count`` messages passed the checks; returns them all."""
        self.wait(lambda: len(self.received) >= count, timeout, f"{count} push message(s)")
        with self.condition:
            return list(self.received)

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            subscription, claims, vapid_key = self.check(path, headers, body)
        except Refused as refused:
            return self._refused(refused.status, str(refused))
        try:
            payload = decrypt(subscription, body)
        except Refused as refused:
            return self._refused(refused.status, str(refused))
        status, answer_headers = self._script.pop() or (201, {})
        if status == 201 and "Location" not in answer_headers:
            answer_headers = {**answer_headers, "Location": self.new_location()}
        with self.condition:
            self.received.append(
                ReceivedPush(subscription.id, headers, body, payload, claims, vapid_key, status)
            )
            self.condition.notify_all()
        return status, answer_headers, b""

    def new_location(self) -> str:
        return f"{self.origin}/message/{uuid.uuid4().hex}"

    def check(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[Subscription, dict[str, Any], str]:
        """What a push service checks of a message: its subscription, VAPID, encoding, TTL and size."""
        sid = path.removeprefix("/push/")
        with self.condition:
            subscription = self._subscriptions.get(sid) if path.startswith("/push/") else None
        if subscription is None:
            raise Refused(404, f"no subscription at {path}")
        try:
            claims, vapid_key = self._verify_vapid(headers.get("authorization", ""))
        except ValueError as exc:
            raise Refused(401, f"VAPID: {exc}") from None
        if headers.get("content-encoding") != "aes128gcm":
            raise Refused(415, f"Content-Encoding is {headers.get('content-encoding')!r}, not aes128gcm")
        if not headers.get("ttl", "").isdigit():
            raise Refused(400, f"TTL is {headers.get('ttl')!r}, not a number of seconds")
        if len(body) > self.MAX_BODY:
            raise Refused(413, f"body is {len(body)} bytes, more than {self.MAX_BODY}")
        return subscription, claims, vapid_key

    def _verify_vapid(self, authorization: str) -> tuple[dict[str, Any], str]:
        scheme, _, params = authorization.partition(" ")
        if scheme.lower() != "vapid":
            raise ValueError(f"Authorization is not 'vapid t=...,k=...': {authorization[:40]!r}")
        values = dict(part.strip().split("=", 1) for part in params.split(",") if "=" in part)
        if "t" not in values or "k" not in values:
            raise ValueError("Authorization lacks t= or k=")
        try:
            public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _unb64url(values["k"]))
            claims = jwt.decode(
                values["t"],
                public_key,
                algorithms=["ES256"],
                audience=self.origin,
                options={"require": ["aud", "exp", "sub"]},
            )
        except (ValueError, jwt.PyJWTError) as exc:
            raise ValueError(str(exc)) from None
        if claims["exp"] > time.time() + 24 * 3600:
            raise ValueError(f"exp {claims['exp']} is more than 24 hours ahead")
        if not str(claims["sub"]).startswith(("mailto:", "https:")):
            raise ValueError(f"sub {claims['sub']!r} is neither mailto: nor https:")
        return claims, values["k"]

    def _refused(self, status: int, reason: str) -> tuple[int, dict[str, str], bytes]:
        self.refuse(reason)
        return status, {"Content-Type": "text/plain"}, reason.encode()


# --- FCM HTTP v1 and Google's OAuth2 token endpoint ------------------------------------------------


@dataclass
class ReceivedFcm:
    """One accepted messages:send request."""

    project: str
    message: dict[str, Any]
    access_token: str
    name: str


_CANONICAL = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
              429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}  # fmt: skip


class FcmService(_HttpService):
    """``POST /token`` (an OAuth2 token endpoint verifying the RS256 assertion of a service account this
    service made) and ``POST /v1/projects/<project>/messages:send`` (only with a token it issued)."""

    def __init__(self, *, token_lifetime: int = 3600) -> None:
        super().__init__()
        #: Seconds each access token is said to last (google-auth refreshes 3m45s before the end).
        self.token_lifetime = token_lifetime
        self.tokens_issued = 0
        self.received: list[ReceivedFcm] = []
        self._accounts: dict[str, tuple[str, rsa.RSAPublicKey]] = {}  # key id: (email, public key)
        self._tokens: set[str] = set()
        self._script = _Script()
        self._tmp = tempfile.TemporaryDirectory(prefix="fcm-service-")

    def stop(self) -> None:
        super().stop()
        self._tmp.cleanup()

    def service_account(self, project_id: str | None = "demo-project") -> str:
        """Write a throwaway service-account file whose ``token_uri`` is this service; returns its path."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_id = uuid.uuid4().hex
        email = f"sender-{key_id[:8]}@{project_id or 'no-project'}.iam.gserviceaccount.com"
        info: dict[str, Any] = {
            "type": "service_account",
            "private_key_id": key_id,
            "private_key": key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode(),
            "client_email": email,
            "client_id": str(uuid.uuid4().int)[:21],
            "token_uri": f"{self.origin}/token",
        }
        if project_id:
            info["project_id"] = project_id
        path = os.path.join(self._tmp.name, f"{key_id}.json")
        with open(path, "w") as file:
            json.dump(info, file)
        with self.condition:
            self._accounts[key_id] = (email, key.public_key())
        return path

    def fail_next(
        self,
        status: int,
        error_code: str | None = None,
        *,
        field_violation: str | None = None,
        retry_after: str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` sends with FCM's error document: ``error_code`` as the FcmError's
        ``errorCode`` (UNREGISTERED, QUOTA_EXCEEDED...), ``field_violation`` as a BadRequest's field."""
        details: list[dict[str, Any]] = []
        if error_code:
            details.append(
                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code}
            )
        if field_violation:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [
                        {"field": field_violation, "description": "Invalid registration token"}
                    ],
                }
            )
        error = {
            "code": status,
            "message": f"scripted {status}",
            "status": _CANONICAL.get(status, "UNKNOWN"),
            "details": details,
        }
        headers = {"Retry-After": retry_after} if retry_after else {}
        self._script.push((status, headers, {"error": error}), times)

    def wait_for(self, count: int, timeout: float = 10) -> list[ReceivedFcm]:
        self.wait(lambda: len(self.received) >= count, timeout, f"{count} FCM message(s)")
        with self.condition:
            return list(self.received)

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        if path == "/token":
            return self._token(body)
        if path.startswith("/v1/projects/") and path.endswith("/messages:send"):
            return self._send(
                path.removeprefix("/v1/projects/").removesuffix("/messages:send"), headers, body
            )
        return self._error(404, f"no such path {path}")

    def _token(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        form = {name: values[0] for name, values in parse_qs(body.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return self._grant_refused(f"grant_type {form.get('grant_type')!r}")
        assertion = form.get("assertion", "")
        try:
            key_id = str(jwt.get_unverified_header(assertion).get("kid"))
            with self.condition:
                email, public_key = self._accounts[key_id]
            claims = jwt.decode(
                assertion,
                public_key,
                algorithms=["RS256"],
                audience=GOOGLE_TOKEN_AUDIENCE,
                issuer=email,
                options={"require": ["iat", "exp", "iss", "aud"]},
            )
        except (KeyError, jwt.PyJWTError) as exc:
            return self._grant_refused(f"assertion: {exc!r}")
        if claims["exp"] - claims["iat"] > 3600:
            return self._grant_refused("assertion valid for more than an hour")
        if FCM_SCOPE not in str(claims.get("scope", "")).split():
            return self._grant_refused(f"scope {claims.get('scope')!r} lacks {FCM_SCOPE}")
        token = f"ya29.local-{uuid.uuid4().hex}"
        with self.condition:
            self.tokens_issued += 1
            self._tokens.add(token)
        answer = {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}
        return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()

    def _grant_refused(self, reason: str) -> tuple[int, dict[str, str], bytes]:
        self.refuse(f"token: {reason}")
        answer = {"error": "invalid_grant", "error_description": reason}
        return 400, {"Content-Type": "application/json"}, json.dumps(answer).encode()

    def _send(self, project: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        with self.condition:
            known = scheme.lower() == "bearer" and token in self._tokens
        if not known:
            return self._error(401, "Request had invalid authentication credentials.")
        try:
            message = json.loads(body)["message"]
        except (ValueError, KeyError, TypeError):
            return self._error(400, "Invalid JSON payload received.")
        if not isinstance(message.get("token"), str) or not message["token"]:
            return self._error(400, "message.token is required")
        data = message.get("data", {})
        if not all(isinstance(value, str) for value in data.values()):
            return self._error(400, "data values must be strings")
        scripted = self._script.pop()
        if scripted is not None:
            status, answer_headers, error = scripted
            return status, {"Content-Type": "application/json", **answer_headers}, json.dumps(error).encode()
        name = f"projects/{project}/messages/{uuid.uuid4().int % 10**16}"
        with self.condition:
            self.received.append(ReceivedFcm(project, message, token, name))
            self.condition.notify_all()
        return 200, {"Content-Type": "application/json"}, json.dumps({"name": name}).encode()

    def _error(self, status: int, message: str) -> tuple[int, dict[str, str], bytes]:
        self.refuse(f"{status}: {message}")
        error = {"error": {"code": status, "message": message, "status": _CANONICAL.get(status, "UNKNOWN")}}
        return status, {"Content-Type": "application/json"}, json.dumps(error).encode()


# --- APNs over HTTP/2 ------------------------------------------------------------------------------


@dataclass
class ReceivedApns:
    """One accepted notification."""

    device_token: str
    headers: dict[str, str]
    payload: dict[str, Any]
    apns_id: str


class ApnsService(_Recorder):
    """APNs' provider API over HTTP/2 and TLS (ALPN h2, a certificate from a throwaway CA in ``ca_file``):
    verifies the ES256 provider token against keys made by ``provider_key`` and the ``apns-topic``,
    answers 200 with an ``apns-id`` unless a test scripted another answer with ``answer_next``."""

    MAX_PAYLOAD = 4096
    #: APNs refuses a provider token issued more than an hour ago.
    TOKEN_MAX_AGE = 3600

    def __init__(self, topic: str = "com.example.app") -> None:
        super().__init__()
        self.topic = topic
        self.received: list[ReceivedApns] = []
        #: TLS connections accepted, and every distinct provider token seen.
        self.connections = 0
        self.provider_tokens: set[str] = set()
        self._keys: dict[str, tuple[str, ec.EllipticCurvePublicKey]] = {}  # key id: (team id, public key)
        self._script = _Script()
        self._tmp = tempfile.TemporaryDirectory(prefix="apns-service-")
        self._ca = trustme.CA()
        self.ca_file = os.path.join(self._tmp.name, "ca.pem")
        self._ca.cert_pem.write_to_path(self.ca_file)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def provider_key(self, key_id: str = "KEY1234567", team_id: str = "TEAM123456") -> str:
        """Write a new ``.p8`` signing key for ``key_id`` of ``team_id``; returns its path."""
        key = ec.generate_private_key(ec.SECP256R1())
        path = os.path.join(self._tmp.name, f"AuthKey_{key_id}.p8")
        with open(path, "wb") as file:
            file.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        with self.condition:
            self._keys[key_id] = (team_id, key.public_key())
        return path

    def answer_next(
        self,
        status: int,
        reason: str,
        *,
        timestamp: int | None = None,
        retry_after: str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` valid requests with ``{"reason": reason}`` (and ``timestamp``, ms)."""
        document: dict[str, Any] = {"reason": reason}
        if timestamp is not None:
            document["timestamp"] = timestamp
        headers = {"retry-after": retry_after} if retry_after else {}
        self._script.push((status, headers, document), times)

    def wait_for(self, count: int, timeout: float = 10) -> list[ReceivedApns]:
        self.wait(lambda: len(self.received) >= count, timeout, f"{count} APNs notification(s)")
        with self.condition:
            return list(self.received)

    def start(self) -> ApnsService:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        context.set_alpn_protocols(["h2"])
        loop = self._loop = asyncio.new_event_loop()
        self._server = loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0, ssl=context)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._thread = threading.Thread(target=loop.run_forever, name="ApnsService")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
            self._loop = self._thread = None
        self._tmp.cleanup()

    def __enter__(self) -> ApnsService:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            writer.close()
            return
        self._writers.add(writer)
        with self.condition:
            self.connections += 1
        connection = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        connection.initiate_connection()
        writer.write(connection.data_to_send())
        streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        try:
            while data := await reader.read(65536):
                for event in connection.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        streams[event.stream_id] = (dict(event.headers), bytearray())  # type: ignore[arg-type]
                    elif isinstance(event, h2.events.DataReceived):
                        streams[event.stream_id][1].extend(event.data)
                        connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        headers, body = streams.pop(event.stream_id)
                        status, answer_headers, answer = self._answer(headers, bytes(body))
                        connection.send_headers(
                            event.stream_id,
                            [(":status", str(status)), *answer_headers.items()],
                            end_stream=not answer,
                        )
                        if answer:
                            connection.send_data(event.stream_id, answer, end_stream=True)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        return
                writer.write(connection.data_to_send())
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _answer(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        path = headers.get(":path", "")
        if headers.get(":method") != "POST" or not path.startswith("/3/device/"):
            return self._refused(404, "BadPath")
        reason = self._verify_token(headers.get("authorization", ""))
        if reason:
            return self._refused(403, reason)
        if headers.get("apns-topic") != self.topic:
            return self._refused(400, "TopicDisallowed" if headers.get("apns-topic") else "MissingTopic")
        if len(body) > self.MAX_PAYLOAD:
            return self._refused(413, "PayloadTooLarge")
        try:
            payload = json.loads(body)
        except ValueError:
            return self._refused(400, "BadPayload")
        scripted = self._script.pop()
        if scripted is not None:
            status, answer_headers, document = scripted
            return (
                status,
                {"content-type": "application/json", **answer_headers},
                json.dumps(document).encode(),
            )
        apns_id = str(uuid.uuid4()).upper()
        with self.condition:
            self.received.append(ReceivedApns(path.removeprefix("/3/device/"), headers, payload, apns_id))
            self.condition.notify_all()
        return 200, {"apns-id": apns_id}, b""

    def _verify_token(self, authorization: str) -> str | None:
        """None when the provider token is good, else APNs' reason for refusing it."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "MissingProviderToken"
        try:
            header = jwt.get_unverified_header(token)
            with self.condition:
                team_id, public_key = self._keys[header.get("kid", "")]
            claims = jwt.decode(
                token, public_key, algorithms=["ES256"], issuer=team_id, options={"require": ["iat", "iss"]}
            )
        except (KeyError, jwt.PyJWTError):
            return "InvalidProviderToken"
        if claims["iat"] < time.time() - self.TOKEN_MAX_AGE:
            return "ExpiredProviderToken"
        with self.condition:
            self.provider_tokens.add(token)
        return None

    def _refused(self, status: int, reason: str) -> tuple[int, dict[str, str], bytes]:
        self.refuse(reason)
        return status, {"content-type": "application/json"}, json.dumps({"reason": reason}).encode()
