"""The webhook's HTTP/1.1 client against a server that answers with scripted raw bytes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from actors.providers import TransientDeliveryError
from actors.providers.http1 import Connection, ProtocolError
from actors.providers.webhook import WebhookProvider
from harness.factories import push_envelope
from harness.receivers import RawServer

HEAD = b"POST /push HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\n"


@pytest.fixture
def serve() -> Iterator:
    servers: list[RawServer] = []

    def start(*answers: bytes | None) -> RawServer:
        servers.append(RawServer(*answers))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def connect() -> Iterator:
    connections: list[Connection] = []

    def open_to(server: RawServer) -> Connection:
        connections.append(Connection("127.0.0.1", server.port, timeout=5))
        return connections[-1]

    yield open_to
    for connection in connections:
        connection.close()


@pytest.mark.parametrize(
    ("first_answer", "first", "second_answer", "second"),
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Other: a\r\n\r\nhello",
            (200, b"hello", "x-other", "a"),
            b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
            (201, b""),
            id="content-length",
        ),
        pytest.param(
            b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\nRetry-After: 7\r\n\r\n"
            b"4;ext=1\r\nbusy\r\n7\r\n, later\r\n0\r\nX-Trailer: t\r\n\r\n",
            (503, b"busy, later", "retry-after", "7"),
            b"HTTP/1.1 204 No Content\r\n\r\n",
            (204, b""),
            id="chunked",
        ),
    ],
)
def test_a_framed_body_is_read_whole_and_the_connection_kept(
    serve, connect, first_answer, first, second_answer, second
) -> None:
    server = serve(first_answer, second_answer)
    connection = connect(server)

    one = connection.request(HEAD, b"{}", max_body=100)
    two = connection.request(HEAD, b"{}", max_body=100)

    status, body, header, value = first
    assert (one.status, one.body, one.headers[header]) == (status, body, value)
    assert (two.status, two.body) == second
    assert server.connections == 1
    assert server.requests == [HEAD + b"{}"] * 2


def test_interim_answers_are_skipped(serve, connect) -> None:
    server = serve(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok")

    response = connect(server).request(HEAD, b"{}", max_body=100)

    assert (response.status, response.body) == (202, b"ok")


def test_body_until_close_ends_the_connection(serve, connect) -> None:
    server = serve(b"HTTP/1.0 200 OK\r\n\r\nall of it", None)
    connection = connect(server)

    response = connection.request(HEAD, b"{}", max_body=100)

    assert (response.status, response.body) == (200, b"all of it")
    assert not connection.is_open


@pytest.mark.parametrize(
    "framing", [b"Content-Length: 1000\r\n\r\n", b"Transfer-Encoding: chunked\r\n\r\n3e8\r\n"]
)
def test_a_body_past_the_limit_is_cut_and_the_connection_dropped(serve, connect, framing: bytes) -> None:
    server = serve(b"HTTP/1.1 400 Bad\r\n" + framing + b"x" * 1000)
    connection = connect(server)

    response = connection.request(HEAD, b"{}", max_body=10)

    assert (response.status, response.body) == (400, b"x" * 10)
    assert not connection.is_open


def test_connection_close_header_ends_the_connection(serve, connect) -> None:
    server = serve(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    connection = connect(server)

    assert connection.request(HEAD, b"{}", max_body=10).status == 200
    assert not connection.is_open


@pytest.mark.parametrize(
    "answer",
    [b"SMTP ready\r\n\r\n", b"HTTP/1.1 2x0 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n"],
)
def test_an_answer_that_is_not_http_is_a_protocol_error(serve, connect, answer: bytes) -> None:
    server = serve(answer)

    with pytest.raises(ProtocolError):
        connect(server).request(HEAD, b"{}", max_body=10)


def test_webhook_treats_an_unreadable_answer_as_transient(serve) -> None:
    server = serve(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 200 + b"\r\n")
    provider = WebhookProvider(f"http://127.0.0.1:{server.port}/push", timeout=5)

    with pytest.raises(TransientDeliveryError, match="too many response headers"):
        provider.deliver(push_envelope())
    provider.close()
