"""A small HTTP/1.1 client over one kept-alive socket: what the webhook needs, and nothing more.

``http.client`` builds each request header by header and parses each response's headers with the
``email`` package: about 220 µs of CPU per request on a small machine, more than everything else a
push delivery costs. This writes the request in one piece and reads the answer strictly (RFC 9112):
an answer it cannot frame beyond doubt, or one that asks for more than it will read, is a
``ProtocolError`` and the connection is closed, never reused, whatever was read of it.
"""

from __future__ import annotations

import re
import select
import socket
import ssl
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

#: Opens the TCP connection to (host, port) within a timeout; socket.create_connection by default.
Connector = Callable[[str, int, float], socket.socket]

# Generous for a webhook's answer; a server sending more is not one.
_MAX_LINE = 8192
_MAX_HEADERS = 100
# Everything of one answer but its body's own bytes: status lines, headers, chunk-size lines and
# the CRLF after each chunk, trailers. With max_body, the most read for one request.
_MAX_FRAMING = 64 * 1024
# More digits than this is more than any body (and than int() takes in decimal, past 4300).
_MAX_LENGTH_DIGITS = 18

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
# HTTP/1.0 or 1.1, a status code from 100 to 599, a reason of visible characters (which may be
# missing); CRLF only: a bare LF or CR is where two readers of one stream start to disagree.
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-5][0-9][0-9])(?: [\t\x20-\x7e\x80-\xff]*)?\r\n")
# A name with no space before the colon, no line folding (a line that starts with a space), no
# control character in the value.
_FIELD_LINE = re.compile(rb"(" + _TOKEN + rb"):([\t\x20-\x7e\x80-\xff]*)\r\n")
# Hex digits only (no sign, no 0x, no space before them), and chunk extensions, which are ignored.
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]+)(?:[\t ]*;[\t ]*"
    + _TOKEN
    + rb"(?:[\t ]*=[\t ]*(?:"
    + _TOKEN
    + rb"|"
    + _QUOTED
    + rb"))?)*\r\n"
)
_DIGITS = re.compile(r"[0-9]+")
_CHUNKED = -1  # what _body_length says of a chunked body


class ProtocolError(OSError):
    """The server's answer is not HTTP/1.x this client can read; the connection is unusable."""


class ConnectionClosed(ProtocolError):
    """The server closed the connection before answering: on a kept-alive one, it had gone idle."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # names in lower case; a repeated header's values joined by ", "
    body: bytes


class Connection:
    """One server's connection, opened on first use and reopened after the server closes it."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        connect: Connector | None = None,
    ) -> None:
        self.host, self.port, self.timeout, self.ssl_context = host, port, timeout, ssl_context
        self._connect = connect or _create_connection
        self._sock: socket.socket | None = None
        self._reader: BinaryIO | None = None
        self._framing = 0  # bytes of framing the answer being read may still take

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def request(self, head: bytes, body: bytes, *, max_body: int) -> Response:
        """Send ``head`` (request line and headers, ending in a blank line) and ``body``; read the answer.

        At most ``max_body`` bytes of the answer's body are read; a longer body closes the connection.
        Any error closes it too: what is left of the answer on it can be read by nothing.
        """
        try:
            self._ready().sendall(head + body)
            response, keep = self._read_response(max_body)
        except BaseException:
            self.close()
            raise
        if not keep:
            self.close()
        return response

    def pipeline(self, requests: Sequence[bytes], *, max_body: int) -> tuple[list[Response], OSError | None]:
        """Send several requests at once, then read their answers in order (RFC 9112 9.3.2).

        Returns the answers read and, when fewer than the requests, why the rest are unanswered:
        the error that closed the connection, or None where the server closed it after its last
        answer (it serves no more on one connection). The unanswered may be sent again on a new one.
        """
        answers: list[Response] = []
        try:
            self._ready().sendall(b"".join(requests))
            for _ in requests:
                response, keep = self._read_response(max_body)
                answers.append(response)
                if not keep:
                    self.close()
                    break
        except OSError as exc:
            self.close()
            return answers, exc
        except BaseException:
            self.close()
            raise
        return answers, None

    def close(self) -> None:
        if self._sock is not None:
            reader, sock = self._reader, self._sock
            self._sock = self._reader = None
            try:
                if reader is not None:
                    reader.close()
            finally:
                sock.close()

    def _ready(self) -> socket.socket:
        """The socket to send on: the kept one unless the server closed it meanwhile, else a new one."""
        if self._sock is not None and _readable(self._sock):
            # Nothing was asked on it, so what is there is the server's close of an idle connection.
            self.close()
        if self._sock is None:
            self._open()
        assert self._sock is not None
        return self._sock

    def _open(self) -> None:
        sock = self._connect(self.host, self.port, self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self._sock, self._reader = sock, sock.makefile("rb")

    def _line(self) -> bytes:
        """The next line with its line end; shorter, or empty, where the connection closed."""
        assert self._reader is not None
        framing = self._framing
        limit = _MAX_LINE if framing > _MAX_LINE else framing
        line = self._reader.readline(limit + 1)
        self._framing = framing - len(line)
        if len(line) > limit:
            raise ProtocolError("response line too long" if limit == _MAX_LINE else "response too long")
        return line

    def _exactly(self, size: int, what: str) -> bytes:
        assert self._reader is not None
        data = self._reader.read(size)
        if len(data) != size:
            raise ProtocolError(f"the connection closed in the {what}")
        return data

    def _read_response(self, max_body: int) -> tuple[Response, bool]:
        self._framing = _MAX_FRAMING
        line = self._line()
        if not line:
            raise ConnectionClosed("the server closed the connection without answering")
        while True:
            status_line = _STATUS_LINE.fullmatch(line)
            if status_line is None:
                raise ProtocolError(f"not an HTTP/1.x status line: {line[:80]!r}")
            status = int(status_line[2])
            if status == 101:
                # Switching to a protocol that is not HTTP: nothing after this can be read as an answer.
                raise ProtocolError("the server switched protocols (101) without being asked to")
            headers = self._headers("response headers")
            if status >= 200:
                break
            # 100 Continue, 103 Early Hints, ...: interim answers without a body, before the real one
            # (RFC 9110 15.2); their number is bounded by the framing they take.
            line = self._line()
        keep = status_line[1] == b"1" and (
            "connection" not in headers or "close" not in _tokens(headers["connection"])
        )
        length = _body_length(headers)
        if length == _CHUNKED and status_line[1] == b"0":
            # HTTP/1.0 has no transfer codings: such a message was likely forwarded by something that
            # did not decode them, so its framing cannot be trusted (RFC 9112 6.1).
            raise ProtocolError("Transfer-Encoding in an HTTP/1.0 answer")
        if status in (204, 304):
            return Response(status, headers, b""), keep
        if length == _CHUNKED:
            body, complete = self._chunked(max_body)
        elif length is not None:
            body = self._exactly(min(length, max_body), "body")
            complete = length <= max_body
        else:
            # Delimited by the server closing the connection; reading stops at max_body regardless.
            assert self._reader is not None
            body, complete = self._reader.read(max_body), False
        return Response(status, headers, body), keep and complete

    def _headers(self, what: str) -> dict[str, str]:
        headers: dict[str, str] = {}
        count = 0
        while (line := self._line()) != b"\r\n":
            field = _FIELD_LINE.fullmatch(line)
            if field is None:
                if not line.endswith(b"\n"):
                    raise ProtocolError(f"the connection closed in the {what}")
                raise ProtocolError(f"malformed line in the {what}: {line[:80]!r}")
            if count == _MAX_HEADERS:
                raise ProtocolError(f"too many {what}")
            count += 1
            name = field[1].decode("ascii").lower()
            value = field[2].strip(b"\t ").decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return headers

    def _chunked(self, max_body: int) -> tuple[bytes, bool]:
        parts: list[bytes] = []
        size = 0
        while True:
            line = self._line()
            chunk_line = _CHUNK_LINE.fullmatch(line)
            if chunk_line is None:
                if not line.endswith(b"\n"):
                    raise ProtocolError("the connection closed in the body")
                raise ProtocolError(f"bad chunk size line: {line[:80]!r}")
            chunk = int(chunk_line[1], 16)
            if chunk == 0:
                break
            if chunk > max_body - size:
                parts.append(self._exactly(max_body - size, "body"))
                return b"".join(parts), False
            parts.append(self._exactly(chunk, "body"))
            size += chunk
            if self._framing < 2:
                raise ProtocolError("response too long")
            self._framing -= 2
            if self._exactly(2, "body") != b"\r\n":
                raise ProtocolError("a chunk is not followed by CRLF")
        self._headers("trailers")
        return b"".join(parts), True


class _Held:
    """One thread's connections, closed when the thread ends (no socket left to the GC)."""

    def __init__(self) -> None:
        self.connections: OrderedDict[tuple[str, str, int], Connection] = OrderedDict()

    def close(self) -> None:
        for connection in list(self.connections.values()):
            connection.close()

    def __del__(self) -> None:
        self.close()


class ThreadConnections:
    """Each thread's kept connections, one per (scheme, host, port), made by ``factory`` on first use.

    A thread keeps at most ``limit`` of them; past that, the one it used least recently is closed.
    """

    def __init__(self, factory: Callable[[str, str, int], Connection], *, limit: int = 16) -> None:
        self._factory = factory
        self._limit = limit
        self._local = threading.local()
        # Lets close() reach every thread's connections; weak, so a finished thread's can go.
        self._all: weakref.WeakSet[_Held] = weakref.WeakSet()
        self._lock = threading.Lock()

    def get(self, scheme: str, host: str, port: int) -> Connection:
        """This thread's connection to ``scheme://host:port``."""
        held: _Held | None = getattr(self._local, "held", None)
        if held is None:
            held = self._local.held = _Held()
            with self._lock:
                self._all.add(held)
        key = (scheme, host, port)
        connection = held.connections.pop(key, None)
        if connection is None:
            connection = self._factory(scheme, host, port)
            if len(held.connections) >= self._limit:
                held.connections.popitem(last=False)[1].close()
        held.connections[key] = connection
        return connection

    def close(self) -> None:
        """Close every thread's connections (each reopens on its next request)."""
        with self._lock:
            helds = list(self._all)
        for held in helds:
            held.close()


def _create_connection(host: str, port: int, timeout: float) -> socket.socket:
    return socket.create_connection((host, port), timeout=timeout)


def _readable(sock: socket.socket) -> bool:
    """Whether reading would not block; on a connection with no request outstanding, a close (or junk)."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    # poll, not select: select cannot watch a descriptor numbered past FD_SETSIZE (1024).
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}


def _body_length(headers: dict[str, str]) -> int | None:
    """The Content-Length, ``_CHUNKED``, or None for a body that ends with the connection.

    Anything a second reader of the same bytes could frame otherwise is refused: both headers,
    a coding other than chunked alone, a length that is not decimal digits or lengths that differ.
    """
    coding, length = headers.get("transfer-encoding"), headers.get("content-length")
    if coding is not None:
        if length is not None:
            raise ProtocolError("both Transfer-Encoding and Content-Length")
        if coding.lower() != "chunked":
            raise ProtocolError(f"unsupported Transfer-Encoding: {coding[:80]!r}")
        return _CHUNKED
    if length is None:
        return None
    if length.isdigit() and length.isascii() and len(length) <= _MAX_LENGTH_DIGITS:
        return int(length)  # the usual one value, needing none of the checks below
    values = {value.strip() for value in length.split(",")}
    if len(values) != 1:
        raise ProtocolError(f"differing Content-Length values: {length[:80]!r}")
    (value,) = values
    if not _DIGITS.fullmatch(value) or len(value) > _MAX_LENGTH_DIGITS:
        raise ProtocolError(f"bad Content-Length: {length[:80]!r}")
    return int(value)
