"""A small HTTP/1.1 client over one kept-alive socket: what the webhook needs, and nothing more.

``http.client`` builds each request header by header and parses each response's headers with the
``email`` package: about 220 µs of CPU per request on a small machine, more than everything else a
push delivery costs. This writes the request in one piece and reads only the status line and the
headers that decide how the body ends and whether the connection can be kept (RFC 9112).
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import BinaryIO

# Generous for a webhook's answer; a server sending more is not one.
_MAX_LINE = 8192
_MAX_HEADERS = 100


class ProtocolError(OSError):
    """The server's answer is not HTTP/1.x this client can read; the connection is unusable."""


class ConnectionClosed(ProtocolError):
    """The server closed the connection before answering: on a kept-alive one, it had gone idle."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # names in lower case; a repeated header keeps its last value
    body: bytes


class Connection:
    """One server's connection, opened on first use and reopened after the server closes it."""

    def __init__(
        self, host: str, port: int, *, timeout: float, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.host, self.port, self.timeout, self.ssl_context = host, port, timeout, ssl_context
        self._sock: socket.socket | None = None
        self._reader: BinaryIO | None = None

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def request(self, head: bytes, body: bytes, *, max_body: int) -> Response:
        """Send ``head`` (request line and headers, ending in a blank line) and ``body``; read the answer.

        At most ``max_body`` bytes of the answer's body are read; a longer body closes the connection.
        """
        if self._sock is None:
            self._open()
        assert self._sock is not None
        self._sock.sendall(head + body)
        response, keep = self._read_response(max_body)
        if not keep:
            self.close()
        return response

    def close(self) -> None:
        if self._sock is not None:
            reader, sock = self._reader, self._sock
            self._sock = self._reader = None
            try:
                if reader is not None:
                    reader.close()
            finally:
                sock.close()

    def _open(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self._sock, self._reader = sock, sock.makefile("rb")

    def _line(self) -> bytes:
        assert self._reader is not None
        line = self._reader.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise ProtocolError("response line too long")
        return line

    def _read_response(self, max_body: int) -> tuple[Response, bool]:
        while True:
            line = self._line()
            if not line:
                raise ConnectionClosed("the server closed the connection without answering")
            version, _, rest = line.partition(b" ")
            code = rest[:3]
            if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
                raise ProtocolError(f"not an HTTP/1.x status line: {line[:80]!r}")
            status = int(code)
            headers = self._headers()
            if status >= 200 or status == 101:
                break
            # 1xx (100 Continue, 103 Early Hints) come before the real answer, and carry no body.
        keep = version == b"HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        if status in (204, 304) or 100 <= status < 200:
            return Response(status, headers, b""), keep
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body, complete = self._chunked(max_body)
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise ProtocolError("bad Content-Length") from None
            body = self._read(min(length, max_body))
            complete = len(body) == length
        else:
            # Delimited by the server closing the connection.
            body, complete = self._read(max_body), False
        return Response(status, headers, body), keep and complete

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS):
            line = self._line()
            if line in (b"\r\n", b"\n"):
                return headers
            if not line:
                raise ConnectionClosed("the connection closed in the response headers")
            name, sep, value = line.partition(b":")
            if sep:
                headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        raise ProtocolError("too many response headers")

    def _read(self, size: int) -> bytes:
        assert self._reader is not None
        return self._reader.read(size)

    def _chunked(self, max_body: int) -> tuple[bytes, bool]:
        parts: list[bytes] = []
        size = 0
        while True:
            line = self._line().split(b";", 1)[0].strip()
            try:
                chunk = int(line, 16)
            except ValueError:
                raise ProtocolError("bad chunk size") from None
            if chunk == 0:
                while self._line() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(parts), True
            if size + chunk > max_body:
                parts.append(self._read(max_body - size))
                return b"".join(parts), False
            parts.append(self._read(chunk))
            size += chunk
            self._line()  # the CRLF after the chunk
