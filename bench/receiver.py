"""A lean push endpoint for benchmarks: `python -m bench.receiver`, one asyncio process, keep-alive HTTP/1.1.

Every POST is answered 200 at once and its ``Idempotency-Key`` recorded with its arrival time
(``time.time()``, so the bench can compare it with the database's clock on the same machine).
``GET /stats`` gives counts and the first and last arrival; ``GET /arrivals`` gives every key's first
arrival. The first line on stdout is ``PORT <n>``. tests/receivers.py's PushReceiver is a thread per
connection and records whole requests; this one sustains well over 10,000 requests/s on one core.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

_OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'


class Recorder:
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


class PushProtocol(asyncio.Protocol):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
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
            self.recorder.record(key)
            self.transport.write(_OK)
            return
        payload = self.recorder.first_arrival if path == b"/arrivals" else self.recorder.stats()
        body = json.dumps(payload).encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        self.transport.write(head.encode() + body)


async def serve() -> None:
    recorder = Recorder()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: PushProtocol(recorder), "127.0.0.1", 0, backlog=1024)
    print("PORT", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        sys.exit(0)
