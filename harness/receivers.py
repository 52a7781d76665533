"""Real local servers to deliver to: SMTP (aiosmtpd), HTTP push endpoints, and raw scripted HTTP bytes.

SmtpReceiver and PushReceiver run in the calling process, keep whole messages and requests and answer
as scripted. They are context managers that work the same from a pytest fixture or a plain script::

    with SmtpReceiver() as smtp, PushReceiver() as push:
        ...deliver to smtp.url / push.url...
        smtp.wait_for(1); push.wait_for(1)

CountingPushReceiver is the benchmarks' endpoint: one asyncio process of its own
(``python -m harness.receivers``) that answers 200 at once and counts, well over 10,000 requests/s.
RawServer answers with scripted raw bytes, for the webhook's HTTP/1.1 client.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email.message import EmailMessage
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from harness.network import free_port
from harness.processes import ROOT, stop

__all__ = [
    "CountingPushReceiver",
    "PushReceiver",
    "RawServer",
    "ReceivedEmail",
    "ReceivedRequest",
    "SmtpReceiver",
]

_Response = tuple[int, dict[str, str], bytes]
#: A status, (status, headers) or (status, headers, body).
ScriptedResponse = int | tuple[int, dict[str, str]] | _Response


def _self_signed_certificate(directory: str) -> tuple[str, str]:
    """A certificate for 127.0.0.1/localhost and its key, made by the openssl CLI into ``directory``."""
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    command = (
        "openssl req -x509 -nodes -days 2 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1"
        " -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost"
    )
    subprocess.run([*command.split(), "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def _wait(condition: threading.Condition, predicate: Any, timeout: float, what: str) -> None:
    with condition:
        if not condition.wait_for(predicate, timeout):
            raise TimeoutError(f"waited {timeout}s for {what}")


@dataclass
class ReceivedEmail:
    """One accepted message: the parsed email and what the SMTP envelope said."""

    message: EmailMessage
    mail_from: str
    rcpt_tos: list[str]
    tls: bool


class _SmtpHandler:
    """aiosmtpd hooks; they run on the controller's event loop thread."""

    def __init__(self, receiver: SmtpReceiver) -> None:
        self.receiver = receiver

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        reply = self.receiver._on_command("RCPT", address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        reply = self.receiver._on_command("DATA", None)
        if reply:
            return reply
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        # session.ssl is set by STARTTLS only; an smtps transport carries its own ssl_object.
        tls = session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None
        self.receiver._on_message(ReceivedEmail(message, envelope.mail_from, list(envelope.rcpt_tos), tls))
        return "250 Message accepted for delivery"


class SmtpReceiver:
    """An SMTP server on 127.0.0.1 that keeps what it is sent and answers as scripted.

    ``starttls=True`` requires STARTTLS, ``implicit_tls=True`` speaks TLS from the first byte (smtps);
    both use a throwaway self-signed certificate that ``ssl_context`` (a client context) trusts.
    ``auth=(user, password)`` accepts only those credentials (and requires them when TLS is on).
    """

    def __init__(
        self, *, starttls: bool = False, implicit_tls: bool = False, auth: tuple[str, str] | None = None
    ) -> None:
        if starttls and implicit_tls:
            raise ValueError("choose starttls or implicit_tls, not both")
        self.starttls = starttls
        self.implicit_tls = implicit_tls
        self.auth = auth
        self.port = 0
        self.ssl_context: ssl.SSLContext | None = None
        self.messages: list[ReceivedEmail] = []
        #: Every RCPT TO address the server was asked for, accepted or not.
        self.rcpts: list[str] = []
        #: Every (user, password) a client tried, successful or not.
        self.logins: list[tuple[str, str]] = []
        self._rejections: deque[list[Any]] = deque()
        self._condition = threading.Condition()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        scheme = "smtp+starttls" if self.starttls else "smtps" if self.implicit_tls else "smtp"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> SmtpReceiver:
        kwargs: dict[str, Any] = {"server_hostname": "localhost"}  # spares a DNS lookup per session
        if self.starttls or self.implicit_tls:
            self._tmp = tempfile.TemporaryDirectory(prefix="smtp-receiver-")
            cert, key = _self_signed_certificate(self._tmp.name)
            server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            server_context.load_cert_chain(cert, key)
            self.ssl_context = ssl.create_default_context(cafile=cert)
            if self.starttls:
                kwargs.update(tls_context=server_context, require_starttls=True)
            else:
                kwargs.update(ssl_context=server_context)
        if self.auth:
            tls = self.starttls or self.implicit_tls
            # aiosmtpd warns (an error under pytest) about requiring AUTH over plain text, so only offer it.
            kwargs.update(authenticator=self._authenticate, auth_required=tls, auth_require_tls=tls)
        self.port = free_port()
        self._controller = Controller(_SmtpHandler(self), hostname="127.0.0.1", port=self.port, **kwargs)
        try:
            self._controller.start()
        except BaseException:
            self._controller = None
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> SmtpReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reject_next(self, code: int, text: str, times: int = 1, *, stage: str | None = None) -> None:
        """Answer the next ``times`` RCPT or DATA commands (only ``stage``'s, if given) with ``code``."""
        if stage not in (None, "RCPT", "DATA"):
            raise ValueError(f"stage must be None, 'RCPT' or 'DATA', got {stage!r}")
        with self._condition:
            self._rejections.append([f"{code} {text}", times, stage])

    def wait_for(self, count: int, timeout: float = 10) -> list[ReceivedEmail]:
        """Block until at least ``count`` messages arrived; returns them all."""
        _wait(self._condition, lambda: len(self.messages) >= count, timeout, f"{count} email(s)")
        with self._condition:
            return list(self.messages)

    def _on_command(self, command: str, address: str | None) -> str | None:
        with self._condition:
            if address is not None:
                self.rcpts.append(address)
            if not self._rejections or self._rejections[0][2] not in (None, command):
                return None
            rejection = self._rejections[0]
            rejection[1] -= 1
            if rejection[1] <= 0:
                self._rejections.popleft()
            return str(rejection[0])

    def _on_message(self, received: ReceivedEmail) -> None:
        with self._condition:
            self.messages.append(received)
            self._condition.notify_all()

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        given = (auth_data.login.decode(), auth_data.password.decode())
        with self._condition:
            self.logins.append(given)
        # handled=False: aiosmtpd then answers a failure with 535 itself.
        return AuthResult(success=given == self.auth, handled=False, auth_data=auth_data)


@dataclass
class ReceivedRequest:
    """One request as the push endpoint saw it."""

    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON, or None when the body was not JSON
    raw: bytes = field(repr=False)
    #: time.monotonic() once the request was read: how far apart two attempts came.
    received_at: float


class _PushHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real endpoint
    disable_nagle_algorithm = True  # headers and body go out in two writes; no 40 ms delayed-ACK stall
    timeout = 30  # an idle kept-alive connection does not hold a thread forever
    server: _PushServer

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            # Handshake here, in this connection's thread, not in the accept loop.
            self.request.settimeout(self.timeout)
            self.request.do_handshake()
        super().setup()
        self.server.receiver._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.receiver._closed(self.connection)

    def do_POST(self) -> None:
        receiver = self.server.receiver
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, headers, body = receiver._on_request(self.path, dict(self.headers.items()), raw)
        if receiver.delay and receiver._stopping.wait(receiver.delay):
            self.close_connection = True  # shutting down: no answer
            return
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if receiver.close_after_response:
            # Without a "Connection: close" header: the client learns only when it tries to reuse it.
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _PushServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops concurrent SYNs, costing a 1 s retransmit each

    def __init__(self, receiver: PushReceiver, ssl_context: ssl.SSLContext | None) -> None:
        self.receiver = receiver
        self.ssl_context = ssl_context
        super().__init__(("127.0.0.1", 0), _PushHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up is what the timeout tests do on purpose.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class PushReceiver:
    """An HTTP endpoint on 127.0.0.1 that records each POST and answers as scripted (200 otherwise).

    ``delay`` makes every answer that many seconds late; ``close_after_response`` drops each connection
    after answering, without announcing it, like a server whose keep-alive timeout ran out.
    ``tls=True`` serves https with a throwaway self-signed certificate that ``ssl_context`` trusts.
    """

    def __init__(self, *, delay: float = 0.0, close_after_response: bool = False, tls: bool = False) -> None:
        self.delay = delay
        self.close_after_response = close_after_response
        self.tls = tls
        self.ssl_context: ssl.SSLContext | None = None
        self.requests: list[ReceivedRequest] = []
        #: TCP connections accepted so far; fewer than requests means connections were reused.
        self.connections = 0
        self._script: deque[_Response] = deque()
        self._condition = threading.Condition()
        self._stopping = threading.Event()
        self._open: dict[socket.socket, threading.Thread] = {}
        self._server: _PushServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "PushReceiver is not started"
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._server.server_address[1]}/push"

    def start(self) -> PushReceiver:
        self._stopping.clear()
        server_context = None
        if self.tls:
            with tempfile.TemporaryDirectory(prefix="push-receiver-") as tmp:
                cert, key = _self_signed_certificate(tmp)
                server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                server_context.load_cert_chain(cert, key)
                self.ssl_context = ssl.create_default_context(cafile=cert)
        self._server = _PushServer(self, server_context)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        assert self._thread is not None
        self._thread.join()
        with self._condition:
            open_connections = dict(self._open)
        # Kept-alive connections would otherwise park their threads until the client hangs up.
        for sock in open_connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in open_connections.values():
            thread.join(timeout=10)
        self._server.server_close()
        self._server = None

    def __enter__(self) -> PushReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def script(self, *responses: ScriptedResponse) -> None:
        """Answer the next requests with these, in order: a status, (status, headers) or with a body too."""
        with self._condition:
            for response in responses:
                if isinstance(response, int):
                    response = (response, {})
                status, headers, body = (*response, b"")[:3]
                if not body:
                    body = json.dumps({"status": status, "reason": HTTPStatus(status).phrase}).encode()
                self._script.append((status, dict(headers), body))

    def wait_for(self, count: int, timeout: float = 10) -> list[ReceivedRequest]:
        """Block until at least ``count`` requests arrived; returns them all."""
        _wait(self._condition, lambda: len(self.requests) >= count, timeout, f"{count} request(s)")
        with self._condition:
            return list(self.requests)

    def unique_ids(self) -> int:
        """How many distinct Idempotency-Key values were seen."""
        with self._condition:
            return len({request.headers.get("Idempotency-Key") for request in self.requests})

    def _on_request(self, path: str, headers: dict[str, str], raw: bytes) -> _Response:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with self._condition:
            self.requests.append(ReceivedRequest(path, headers, body, raw, time.monotonic()))
            self._condition.notify_all()
            if self._script:
                return self._script.popleft()
        return 200, {"Content-Type": "application/json"}, b'{"ok": true}'

    def _opened(self, sock: socket.socket) -> None:
        with self._condition:
            self.connections += 1
            self._open[sock] = threading.current_thread()

    def _closed(self, sock: socket.socket) -> None:
        with self._condition:
            self._open.pop(sock, None)


class RawServer:
    """Answers each request with the next scripted bytes; a ``None`` entry closes the connection.

    Each connection is served by a thread of its own. Once the script is done, a request gets
    ``then``, or no answer at all, and the connection stays open until the client closes it.
    """

    def __init__(self, *answers: bytes | None, then: bytes | None = None) -> None:
        self.answers = deque(answers)
        self.then = then
        self.requests: list[bytes] = []
        self.arrivals: list[int] = []  # the connection (1, 2, ...) each request came on
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
            threading.Thread(target=self._serve, args=(sock, number), daemon=True).start()

    def _serve(self, sock: socket.socket, number: int) -> None:
        # The client may close or reset the connection at any point: what it then sees is the test's.
        with sock, contextlib.suppress(OSError):
            self._answer(sock, number)

    def _answer(self, sock: socket.socket, number: int) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = sock.recv(65536)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            while len(buffer) < length:
                buffer += sock.recv(65536)
            with self._lock:
                self.requests.append(head + b"\r\n\r\n" + buffer[:length])
                self.arrivals.append(number)
                scripted = bool(self.answers)
                answer = self.answers.popleft() if scripted else self.then
                # Taken with the answer, so that a request on another connection cannot take it.
                close_after = answer is not None and bool(self.answers) and self.answers[0] is None
                if close_after:
                    self.answers.popleft()
            buffer = buffer[length:]
            if answer is None:
                if scripted:
                    return
                continue
            sock.sendall(answer)
            if close_after:
                return

    def close(self) -> None:
        self._listener.close()


class CountingPushReceiver:
    """The benchmarks' push endpoint, in a process of its own (this module's ``__main__``).

    Every POST is answered 200 at once and its ``Idempotency-Key`` recorded with its arrival time
    (``time.time()``, so that a benchmark can compare it with the database's clock on the same machine).
    PushReceiver is a thread per connection and records whole requests; this sustains well over
    10,000 requests/s on one core.
    """

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/push"

    def start(self) -> CountingPushReceiver:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "harness.receivers"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        if len(line) != 2 or line[0] != "PORT":
            self.stop()
            raise RuntimeError("the counting push receiver did not start")
        self.port = int(line[1])
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, timeout=5)
            self.process = None

    def __enter__(self) -> CountingPushReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """Requests and distinct keys counted, and the first and last arrival."""
        return self._get("/stats")

    def arrivals(self) -> dict[str, float]:
        """Each key's first arrival."""
        return self._get("/arrivals")

    def _get(self, path: str) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()


_OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'


class _Arrivals:
    """What the counting endpoint has seen: a count, each key's first arrival, the first and the last."""

    def __init__(self) -> None:
        self.count = 0
        self.first_arrival: dict[str, float] = {}
        self.first = 0.0
        self.last = 0.0

    def record(self, key: str) -> None:
        now = time.time()
        self.count += 1
        self.first_arrival.setdefault(key, now)
        if not self.first:
            self.first = now
        self.last = now

    def stats(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "unique": len(self.first_arrival),
            "first": self.first,
            "last": self.last,
        }


class _CountingProtocol(asyncio.Protocol):
    """Just enough keep-alive HTTP/1.1: POSTs counted, ``GET /stats`` and ``GET /arrivals`` answered."""

    def __init__(self, arrivals: _Arrivals) -> None:
        self.arrivals = arrivals
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            lines = self.buffer[:end].split(b"\r\n")
            length, key = 0, ""
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"idempotency-key":
                    key = value.strip().decode()
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            self.buffer = self.buffer[total:]
            method, path = lines[0].split(b" ")[:2]
            self.answer(method, path, key)

    def answer(self, method: bytes, path: bytes, key: str) -> None:
        assert self.transport is not None
        if method == b"POST":
            self.arrivals.record(key)
            self.transport.write(_OK)
            return
        payload = self.arrivals.first_arrival if path == b"/arrivals" else self.arrivals.stats()
        body = json.dumps(payload).encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        self.transport.write(head.encode() + body)


async def _serve_counting() -> None:
    """The counting endpoint on a free port; the first line on stdout is ``PORT <n>``."""
    arrivals = _Arrivals()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _CountingProtocol(arrivals), "127.0.0.1", 0, backlog=1024)
    print("PORT", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(_serve_counting())
    except KeyboardInterrupt:
        sys.exit(0)
