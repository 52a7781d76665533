"""The benchmarks' Web Push service: ``WebPushService``'s checks, at the pace of a real push service.

A push service verifies the VAPID JWT and keeps the encrypted message; the browser decrypts it. This
one does the same: an asyncio loop in a thread of its own (a protocol per connection, not a thread
each, and no ``email`` parsing of headers), a VAPID token verified once and its expiry checked on
every use, as a push service may do for the many messages one sender signs with one token. Every
message it accepted is decrypted afterwards by ``decrypt_received``, outside the window a benchmark
times, and only those that decrypt are counted as received.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from harness.push_services import ReceivedPush, Refused, Subscription, WebPushService, decrypt

__all__ = ["BulkWebPushService"]

# Larger than any message a sender may send (4,096 bytes of body and its head).
_MAX_REQUEST = 64 * 1024


class _Connection(asyncio.Protocol):
    """One sender's kept-alive connection: HTTP/1.1 requests with a Content-Length, answered in turn."""

    def __init__(self, service: BulkWebPushService) -> None:
        self.service = service
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.service.transports.add(transport)
        with self.service.condition:
            self.service.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        assert self.transport is not None
        self.service.transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            if len(self.buffer) < end + 4 + length:
                if len(self.buffer) > _MAX_REQUEST:
                    self.transport.close()
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            status, answer_headers, answer = self.service.handle(lines[0].split(" ")[1], headers, body)
            head = "".join(f"{name}: {value}\r\n" for name, value in answer_headers.items())
            self.transport.write(
                f"HTTP/1.1 {status} -\r\n{head}Content-Length: {len(answer)}\r\n\r\n".encode() + answer
            )


class BulkWebPushService(WebPushService):
    """Accepts what ``WebPushService`` accepts; decrypts it all in ``decrypt_received``."""

    def __init__(self) -> None:
        super().__init__()
        self.port = 0
        #: Messages that passed the checks, not decrypted yet, and when the latest came (time.time()).
        self.accepted: list[tuple[Subscription, dict[str, str], bytes, dict[str, Any], str]] = []
        self.last_accepted_at = 0.0
        self._verified: dict[str, tuple[dict[str, Any], str]] = {}
        #: The open connections' transports, used only in the loop's thread.
        self.transports: set[asyncio.Transport] = set()
        self._awaited = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: asyncio.Server | None = None
        self._loop_thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BulkWebPushService:
        loop = self._loop = asyncio.new_event_loop()
        self._listener = loop.run_until_complete(
            loop.create_server(lambda: _Connection(self), "127.0.0.1", 0)
        )
        self.port = self._listener.sockets[0].getsockname()[1]
        self._loop_thread = threading.Thread(target=loop.run_forever, name="BulkWebPushService")
        self._loop_thread.start()
        return self

    def stop(self) -> None:
        if self._loop is not None and self._loop_thread is not None and self._listener is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join()
            self._loop.close()
            self._loop = self._loop_thread = self._listener = None

    async def _shutdown(self) -> None:
        assert self._listener is not None
        self._listener.close()
        for transport in list(self.transports):
            transport.close()
        await self._listener.wait_closed()

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            subscription, claims, vapid_key = self.check(path, headers, body)
        except Refused as refused:
            return self._refused(refused.status, str(refused))
        with self.condition:
            self.accepted.append((subscription, headers, body, claims, vapid_key))
            self.last_accepted_at = time.time()
            # Only the awaited count wakes the waiter: a wake-up per message would take the GIL from
            # this loop as often as messages arrive.
            if len(self.accepted) == self._awaited:
                self.condition.notify_all()
        return 201, {"Location": self.new_location()}, b""

    def wait_accepted(self, count: int, timeout: float) -> None:
        """Block until ``count`` messages passed the checks (TimeoutError if not within ``timeout``)."""
        with self.condition:
            self._awaited = count
        self.wait(lambda: len(self.accepted) >= count, timeout, f"{count} push message(s)")

    def decrypt_received(self) -> list[ReceivedPush]:
        """Decrypt every accepted message, as each subscription's browser would; ``received`` holds those
        that decrypted, ``refusals`` says why the others did not."""
        with self.condition:
            accepted, self.accepted = self.accepted, []
        for subscription, headers, body, claims, vapid_key in accepted:
            try:
                payload = decrypt(subscription, body)
            except Refused as refused:
                self.refuse(str(refused))
                continue
            self.received.append(
                ReceivedPush(subscription.id, headers, body, payload, claims, vapid_key, 201)
            )
        return list(self.received)

    def _verify_vapid(self, authorization: str) -> tuple[dict[str, Any], str]:
        verified = self._verified.get(authorization)
        if verified is None:
            verified = self._verified[authorization] = super()._verify_vapid(authorization)
        elif verified[0]["exp"] <= time.time():
            raise ValueError("the JWT has expired")
        return verified
