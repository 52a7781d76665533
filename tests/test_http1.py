"""The webhook's HTTP/1.1 client against a server that answers with scripted raw bytes.

The server keeps a connection open once its script is done, until the client closes it: a reader
that wants more than it was sent waits for it, and its own timeout says so (a ``TimeoutError``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.providers import Envelope, PermanentDeliveryError, TransientDeliveryError
from actors.providers.http1 import Connection, ConnectionClosed, ProtocolError, Response
from actors.providers.webhook import WebhookProvider
from harness.receivers import RawServer

HEAD = b"POST /push HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\n"
# What the server answers once its script is done, in the property test.
NEXT = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext"
TIMEOUT = 5.0


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
        connections.append(Connection("127.0.0.1", server.port, timeout=TIMEOUT))
        return connections[-1]

    yield open_to
    for connection in connections:
        connection.close()


def push() -> Envelope:
    return Envelope(notification_id="p-1", channel="push", recipient_id="user-42", content="Shipped.")


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
            b'4;ext=1\r\nbusy\r\n7 ; q = "a \\" b"\r\n, later\r\n0\r\nX-Trailer: t\r\n\r\n',
            (503, b"busy, later", "retry-after", "7"),
            b"HTTP/1.1 204 No Content\r\n\r\n",
            (204, b""),
            id="chunked",
        ),
        pytest.param(
            b"HTTP/1.1 200 \r\nContent-Length: 2, 2\r\nContent-Length: 2\r\nX-A: 1\r\nX-A: 2\r\n\r\nok",
            (200, b"ok", "x-a", "1, 2"),
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\n\r\n",
            (304, b""),
            id="repeated-headers",
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


@pytest.mark.parametrize(
    "interim",
    [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"],
    ids=["100", "103"],
)
def test_interim_answers_are_skipped(serve, connect, interim: bytes) -> None:
    server = serve(interim + b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok")

    response = connect(server).request(HEAD, b"{}", max_body=100)

    assert (response.status, response.body) == (202, b"ok")


def test_body_until_close_ends_the_connection(serve, connect) -> None:
    server = serve(b"HTTP/1.0 200 OK\r\n\r\nall of it", None)
    connection = connect(server)

    response = connection.request(HEAD, b"{}", max_body=100)

    assert (response.status, response.body) == (200, b"all of it")
    assert not connection.is_open


@pytest.mark.parametrize(
    "framing",
    [b"Content-Length: 1000\r\n\r\n", b"Transfer-Encoding: chunked\r\n\r\n3e8\r\n", b"\r\n"],
    ids=["content-length", "chunked", "until-close"],
)
def test_a_body_past_the_limit_is_cut_and_the_connection_dropped(serve, connect, framing: bytes) -> None:
    # Ten bytes of the body and no more, on a connection left open: a reader wanting more would wait.
    server = serve(b"HTTP/1.1 400 Bad\r\n" + framing + b"x" * 10)
    connection = connect(server)

    response = connection.request(HEAD, b"{}", max_body=10)

    assert (response.status, response.body) == (400, b"x" * 10)
    assert not connection.is_open


def test_connection_close_header_ends_the_connection(serve, connect) -> None:
    server = serve(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n")
    connection = connect(server)

    assert connection.request(HEAD, b"{}", max_body=10).status == 200
    assert not connection.is_open


OK = b"HTTP/1.1 200 OK\r\n"
CHUNKED = OK + b"Transfer-Encoding: chunked\r\n\r\n"


def test_pipelined_requests_get_their_answers_in_order_on_one_connection(serve, connect) -> None:
    server = serve(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na",
        b"HTTP/1.1 503 Busy\r\nContent-Length: 1\r\n\r\nb",
        b"HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nc",
    )
    connection = connect(server)

    answers, error = connection.pipeline([HEAD + b"{}"] * 3, max_body=10)

    assert [(a.status, a.body) for a in answers] == [(200, b"a"), (503, b"b"), (201, b"c")]
    assert error is None and connection.is_open
    assert server.connections == 1 and server.requests == [HEAD + b"{}"] * 3


@pytest.mark.parametrize(
    ("after_first", "error"),
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", None, id="close"),
        pytest.param(None, ConnectionClosed, id="closed-unanswered"),
    ],
)
def test_pipelined_answers_stop_where_the_server_closes_the_connection(
    serve, connect, after_first: bytes | None, error: type | None
) -> None:
    server = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", after_first)
    connection = connect(server)

    answers, stopped_by = connection.pipeline([HEAD + b"{}"] * 3, max_body=10)

    assert [a.status for a in answers] == ([200] if after_first is None else [200, 200])
    assert stopped_by is None if error is None else isinstance(stopped_by, error)
    assert not connection.is_open


def test_webhook_sends_the_unanswered_again_on_a_new_connection(serve) -> None:
    # The first connection answers the first of three and closes at the second; the next answers both.
    empty = OK + b"Content-Length: 0\r\n\r\n"
    server = serve(empty, None, empty, empty)
    provider = WebhookProvider(f"http://127.0.0.1:{server.port}/push", timeout=TIMEOUT)
    envelopes = [Envelope(f"p-{i}", "push", "user-42", "Shipped.") for i in range(3)]

    assert provider.deliver_many(envelopes) == [None, None, None]
    keys = [request.split(b"Idempotency-Key: ")[1].split(b"\r\n")[0] for request in server.requests]
    assert keys[-2:] == [b"p-1", b"p-2"] and server.arrivals[-2:] == [2, 2]
    provider.close()


def test_webhook_gives_each_pipelined_notification_its_own_outcome(serve) -> None:
    server = serve(
        OK + b"Content-Length: 0\r\n\r\n",
        b"HTTP/1.1 503 Busy\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nbusy",
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\nno",
    )
    provider = WebhookProvider(f"http://127.0.0.1:{server.port}/push", timeout=TIMEOUT)
    envelopes = [Envelope(f"p-{i}", "push", "user-42", "Shipped.") for i in range(3)]

    delivered, busy, refused = provider.deliver_many(envelopes)

    assert delivered is None
    assert (
        isinstance(busy, TransientDeliveryError) and busy.retry_after == 7 and "HTTP 503 busy" in busy.reason
    )
    assert isinstance(refused, PermanentDeliveryError) and "HTTP 400 no" in refused.reason
    assert server.connections == 1
    provider.close()


def test_webhook_fails_the_unanswered_transiently_when_the_server_stops_answering(serve) -> None:
    server = serve(OK + b"Content-Length: 0\r\n\r\n")  # then it answers nothing
    provider = WebhookProvider(f"http://127.0.0.1:{server.port}/push", timeout=0.5)
    envelopes = [Envelope(f"p-{i}", "push", "user-42", "Shipped.") for i in range(3)]

    delivered, *unanswered = provider.deliver_many(envelopes)

    assert delivered is None
    assert all(isinstance(e, TransientDeliveryError) and "timed out" in e.reason for e in unanswered)
    assert unanswered[0] is not unanswered[1]
    provider.close()


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"SMTP ready\r\n\r\n", id="not-http"),
        pytest.param(b"HTTP/1.1 2x0 OK\r\n\r\n", id="status-not-digits"),
        pytest.param(b"HTTP/2 200 OK\r\n\r\n", id="http-2"),
        pytest.param(b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", id="bare-lf"),
        pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00", id="101"),
        pytest.param(b"HTTP/1.1 100 Continue\r\n\r\n" * 3000, id="endless-interim-answers"),
        pytest.param(OK + b"Content-Length: many\r\n\r\n", id="length-not-digits"),
        pytest.param(OK + b"Content-Length: -1\r\n\r\n" + b"x" * 100, id="negative-length"),
        pytest.param(OK + b"Content-Length: +2\r\n\r\nok", id="signed-length"),
        pytest.param(OK + b"Content-Length: 2\r\nContent-Length: 5\r\n\r\nok", id="differing-lengths"),
        pytest.param(OK + b"Content-Length: 2, 5\r\n\r\nok", id="differing-length-list"),
        pytest.param(OK + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", id="both"),
        pytest.param(OK + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", id="unknown-coding"),
        pytest.param(OK + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", id="not-quite-chunked"),
        pytest.param(
            b"HTTP/1.0 200\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nxxX-Trailer:\r\n\r\n",
            id="chunked-http-1.0",
        ),
        pytest.param(CHUNKED + b"-1\r\n" + b"x" * 100, id="negative-chunk"),
        pytest.param(CHUNKED + b"0x2\r\nok\r\n0\r\n\r\n", id="0x-chunk"),
        pytest.param(CHUNKED + b" 2\r\nok\r\n0\r\n\r\n", id="space-before-chunk-size"),
        pytest.param(CHUNKED + b"2\r\nokXX\r\n0\r\n\r\n", id="no-crlf-after-chunk"),
        pytest.param(CHUNKED + b"0\r\n" + b"X-T: t\r\n" * 101 + b"\r\n", id="too-many-trailers"),
        pytest.param(
            CHUNKED + (b"1;" + b"e" * 4000 + b"\r\nx\r\n") * 20 + b"0\r\n\r\n", id="framing-past-cap"
        ),
        pytest.param(OK + b"X-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n", id="obs-fold"),
        pytest.param(OK + b"Content-Length : 0\r\n\r\n", id="space-before-colon"),
        pytest.param(OK + b"no colon here\r\nContent-Length: 0\r\n\r\n", id="no-colon"),
        pytest.param(OK + b"X-A: a\x00b\r\nContent-Length: 0\r\n\r\n", id="nul-in-value"),
        pytest.param(OK + b"X-A: a\rb\r\nContent-Length: 0\r\n\r\n", id="bare-cr"),
        pytest.param(OK + b"X: " + b"y" * 9000 + b"\r\n\r\n", id="line-too-long"),
    ],
)
def test_an_answer_that_is_not_plain_http_is_a_protocol_error_and_the_connection_closed(
    serve, connect, answer: bytes
) -> None:
    server = serve(answer)
    connection = connect(server)

    with pytest.raises(ProtocolError):
        connection.request(HEAD, b"{}", max_body=64 * 1024)
    assert not connection.is_open


@pytest.mark.parametrize(
    "answer",
    [
        OK + b"Content-Length: 10\r\n\r\nshort",
        CHUNKED + b"5\r\nshort",
        CHUNKED + b"5\r\nshort\r\n0\r\n",  # no blank line after the trailers
        OK + b"Content-Length: 0\r\n",
    ],
    ids=["length", "chunk", "trailers", "headers"],
)
def test_an_answer_cut_short_by_the_server_closing_is_a_protocol_error(serve, connect, answer) -> None:
    server = serve(answer, None)
    connection = connect(server)

    with pytest.raises(ProtocolError):
        connection.request(HEAD, b"{}", max_body=100)
    assert not connection.is_open


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        pytest.param(OK + b"X: y\r\n" * 200 + b"\r\n", "too many response headers", id="headers"),
        # Read to the end past the 64 KiB cap, this was once a 200 with 2 MB of body.
        pytest.param(
            OK + b"Content-Length: -1\r\n\r\n" + b"x" * 2_000_000, "bad Content-Length", id="negative-length"
        ),
        pytest.param(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", "switched protocols", id="101"
        ),
    ],
)
def test_webhook_treats_an_unreadable_answer_as_transient(serve, answer: bytes, error: str) -> None:
    server = serve(answer, None)
    provider = WebhookProvider(f"http://127.0.0.1:{server.port}/push", timeout=TIMEOUT)

    with pytest.raises(TransientDeliveryError, match=error):
        provider.deliver(push())
    provider.close()


def test_webhook_does_not_wait_on_a_chunk_size_of_minus_one(serve) -> None:
    """Read as "until the connection closes", it held the worker's thread while the server kept it open."""
    server = serve(CHUNKED + b"-1\r\n" + b"x" * 100)
    provider = WebhookProvider(f"http://127.0.0.1:{server.port}/push", timeout=TIMEOUT)

    with pytest.raises(TransientDeliveryError, match="bad chunk size"):
        provider.deliver(push())
    provider.close()


# The property: answers made of valid HTTP/1.1 pieces, and of those pieces broken one at a time.

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VISIBLE = "".join(chr(c) for c in range(0x21, 0x7F))
FRAMING_NAMES = {"content-length", "transfer-encoding", "connection"}
INTERIM = [
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 102 Processing\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
]
OWS = st.sampled_from(["", " ", "\t", "  "])
CODINGS = st.sampled_from(["chunked", "Chunked", "CHUNKED"])
EXTENSIONS = st.sampled_from([b"", b";a=1", b' ; name = "q \\" v"', b";x", b";a;b=c", b"\t;t\t=\ttoken"])


@dataclass
class Answer:
    """A valid answer as its pieces (kind, bytes), and what reading it must give."""

    pieces: list[tuple[str, bytes]]
    max_body: int
    expected: Response
    kept: bool
    # Where a strict reader has read all it needs of a body longer than max_body, if it is.
    cut: int | None
    until_close: bool

    @property
    def raw(self) -> bytes:
        return b"".join(data for _, data in self.pieces)


@st.composite
def field_values(draw) -> str:
    return " ".join(draw(st.lists(st.text(VISIBLE, min_size=1, max_size=6), max_size=3)))


@st.composite
def valid_answers(draw, *, small_cap: bool = True) -> Answer:
    interim = draw(st.lists(st.sampled_from(INTERIM), max_size=2))
    pieces: list[tuple[str, bytes]] = [("interim", data) for data in interim]
    version = draw(st.sampled_from(["1.0", "1.1"]))
    status = draw(st.one_of(st.integers(200, 599), st.sampled_from([204, 304])))
    reason = draw(st.one_of(st.none(), st.text(" \t" + VISIBLE, max_size=12)))
    pieces.append(("status", f"HTTP/{version} {status}{'' if reason is None else ' ' + reason}\r\n".encode()))

    names = draw(
        st.lists(
            st.text(TCHARS, min_size=1, max_size=10).filter(lambda n: n.lower() not in FRAMING_NAMES),
            unique_by=str.lower,
            max_size=4,
        )
    )
    headers = {}
    for name in names:
        value = draw(field_values())
        headers[name.lower()] = value
        pieces.append(("field", f"{name}:{draw(OWS)}{value}{draw(OWS)}\r\n".encode()))
    connection = draw(st.sampled_from([None, "close", "keep-alive", "Keep-Alive, Close", "upgrade"]))
    if connection is not None:
        headers["connection"] = connection
        pieces.append(("field", f"Connection: {connection}\r\n".encode()))

    no_body = status in (204, 304)
    body = b"" if no_body else draw(st.binary(max_size=300))
    # HTTP/1.0 has no transfer codings: a chunked 1.0 answer is one of the broken ones.
    framings = ["length", "chunked", "close"] if version == "1.1" else ["length", "close"]
    framing = draw(st.sampled_from(["none", "length"] if no_body else framings))
    if framing == "length":
        length = draw(st.integers(0, 10**6)) if no_body else len(body)
        digits = "0" * draw(st.integers(0, 2)) + str(length)
        lines = draw(st.sampled_from([[digits], [f"{digits}, {digits}"], [digits, digits]]))
        pieces += [("framing", f"Content-Length: {line}\r\n".encode()) for line in lines]
        headers["content-length"] = ", ".join(lines)
    elif framing == "chunked":
        name, coding = draw(st.sampled_from(["Transfer-Encoding", "transfer-encoding"])), draw(CODINGS)
        pieces.append(("framing", f"{name}: {coding}\r\n".encode()))
        headers["transfer-encoding"] = coding
    pieces.append(("blank", b"\r\n"))

    max_body = draw(st.integers(1, 400) if small_cap else st.integers(max(1, len(body)), len(body) + 50))
    head_size = sum(len(data) for _, data in pieces)
    cut = None
    if framing in ("length", "close") and not no_body:
        pieces.append(("body", body))
        if len(body) > max_body:
            cut = head_size + max_body
    elif framing == "chunked":
        splits = draw(st.sets(st.integers(1, len(body) - 1), max_size=5)) if len(body) > 1 else set()
        bounds = sorted(splits | {0, len(body)})
        size, offset = 0, head_size
        for start, end in itertools.pairwise(bounds):
            chunk = body[start:end]
            digits = "0" * draw(st.integers(0, 2)) + draw(st.sampled_from(["{:x}", "{:X}"])).format(
                len(chunk)
            )
            line = digits.encode() + draw(EXTENSIONS) + b"\r\n"
            pieces += [("size", line), ("data", chunk), ("crlf", b"\r\n")]
            if cut is None and size + len(chunk) > max_body:
                cut = offset + len(line) + (max_body - size)
            size += len(chunk)
            offset += len(line) + len(chunk) + 2
        pieces.append(("last", b"0" * draw(st.integers(1, 3)) + draw(EXTENSIONS) + b"\r\n"))
        for _ in range(draw(st.integers(0, 2))):
            pieces.append(("trailer", f"X-Trailer:{draw(OWS)}{draw(field_values())}\r\n".encode()))
        pieces.append(("end", b"\r\n"))

    kept = (
        version == "1.1" and "close" not in (connection or "").lower() and framing != "close" and cut is None
    )
    expected = Response(status, headers, body[:max_body])
    return Answer(pieces, max_body, expected, kept, cut, framing == "close")


BAD_STATUS_LINES = [
    b"HTTP/1.1 2x0 OK",
    b"HTTP/2 200 OK",
    b"HTTP/1.2 200 OK",
    b"http/1.1 200 OK",
    b"HTTP/1.1 99 OK",
    b"HTTP/1.1 600 No",
    b"HTTP/1.1  200 OK",
    b"HTTP/1.1 2000 OK",
    b"HTTP/1.1200 OK",
    b" HTTP/1.1 200 OK",
    b"HTTP/1.1 200 O\rK",
    b"HTTP/1.1 200 O\x00K",
    b"",
]
BAD_LENGTHS = [
    b"-1",
    b"-0",
    b"+5",
    b"0x10",
    b"1_0",
    b"5 5",
    b"",
    b" ",
    b"1e2",
    b"5.0",
    b"\xd9\xa1",
    b"9" * 19,
]
BAD_CODINGS = [
    b"gzip",
    b"gzip, chunked",
    b"chunked, gzip",
    b"identity",
    b"xchunked",
    b"chunked;q=1",
    b"chunked, chunked",
]
BAD_SIZES = [
    b"-1",
    b"-a",
    b"+1",
    b"0x1",
    b" 1",
    b"1 ",
    b"g",
    b"",
    b"1;",
    b"1;=x",
    b'1;a="open',
    b"1 2",
    b"\xd9\xa1",
]
BAD_FIELDS = [
    b" folded\r\n",
    b"\tfolded\r\n",
    b"Name : value\r\n",
    b"no colon\r\n",
    b": no name\r\n",
    b"X-Bad: a\x00b\r\n",
    b"X-Bad: a\x7fb\r\n",
    b"X-Bad: a\rb\r\n",
    b"X-Bad: a\x1bb\r\n",
    b"X-Long: " + b"v" * 8200 + b"\r\n",
    b"X-N: v\r\n" * 101,
    (b"X-Wide: " + b"w" * 1000 + b"\r\n") * 70,  # 70 KiB of headers, past the framing cap
]


@st.composite
def broken_answers(draw) -> tuple[bytes, bool]:
    """A valid answer with one thing broken: its bytes, and whether the server closes after them.

    Each is broken where a reader sees it without waiting for more; the cap is past the body.
    """
    answer = draw(valid_answers(small_cap=False))
    pieces = list(answer.pieces)
    kinds = [kind for kind, _ in pieces]

    def one_of(*wanted: str) -> int:
        return draw(st.sampled_from([i for i, kind in enumerate(kinds) if kind in wanted]))

    framing = next((data for kind, data in pieces if kind == "framing"), b"")
    chunked = b"chunked" in framing.lower()
    breakages = ["status", "101", "line-end", "field", "interim-flood", "truncated"]
    breakages += (["coding", "size", "crlf", "trailer"] if chunked else ["length"]) + ["both"]
    breakage = draw(st.sampled_from(breakages))
    if not framing and breakage == "length":
        pieces.insert(kinds.index("blank"), ("framing", b""))
        kinds = [kind for kind, _ in pieces]

    if breakage == "status":
        garbage = st.binary(max_size=40).filter(lambda line: not line.startswith(b"HTTP/1."))
        line = draw(st.one_of(st.sampled_from(BAD_STATUS_LINES), garbage))
        pieces[kinds.index("status")] = ("status", line + b"\r\n")
    elif breakage == "101":
        pieces[kinds.index("status")] = ("status", b"HTTP/1.1 101 Switching Protocols\r\n")
    elif breakage == "line-end":
        # A bare LF (or LF CR) where a CRLF ends a line of the head, a chunk's size or the trailers.
        i = one_of("status", "field", "framing", "blank", "size", "last", "trailer", "end")
        pieces[i] = (kinds[i], pieces[i][1][:-2] + draw(st.sampled_from([b"\n", b"\n\r"])))
    elif breakage == "field":
        pieces.insert(one_of("status", "field", "framing") + 1, ("field", draw(st.sampled_from(BAD_FIELDS))))
    elif breakage == "length":
        value = draw(
            st.one_of(
                st.sampled_from(BAD_LENGTHS),
                st.tuples(st.integers(0, 500), st.integers(1, 5)).map(lambda t: f"{t[0]}, {sum(t)}".encode()),
            )
        )
        pieces[one_of("framing")] = ("framing", b"Content-Length: " + value + b"\r\n")
        if draw(st.booleans()):  # and a second, different one
            pieces.insert(kinds.index("blank"), ("framing", b"Content-Length: 501\r\n"))
    elif breakage == "coding":
        pieces[one_of("framing")] = (
            "framing",
            b"Transfer-Encoding: " + draw(st.sampled_from(BAD_CODINGS)) + b"\r\n",
        )
    elif breakage == "both":
        missing = [
            line
            for line in (b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n")
            if line.split(b":")[0].lower() not in framing.lower()
        ]
        pieces.insert(kinds.index("blank"), ("framing", b"".join(missing)))
    elif breakage == "size":
        i = one_of("size", "last")
        pieces[i] = (kinds[i], draw(st.sampled_from(BAD_SIZES)) + b"\r\n")
    elif breakage == "crlf" and "crlf" in kinds:
        pieces[one_of("crlf")] = (
            "crlf",
            draw(st.binary(min_size=2, max_size=2).filter(lambda b: b != b"\r\n")),
        )
    elif breakage == "crlf":  # no chunk but the last: a body after it, where the trailers start
        # The NUL keeps it from joining a trailer after it into one valid field line ("xxX-Trailer:").
        pieces.insert(kinds.index("last") + 1, ("data", b"x\x00"))
    elif breakage == "trailer":
        pieces.insert(kinds.index("last") + 1, ("trailer", draw(st.sampled_from(BAD_FIELDS))))
    elif breakage == "interim-flood":
        pieces.insert(0, ("interim", INTERIM[0] * 3000))  # 75 KiB of 100 Continue, past the framing cap
    elif breakage == "truncated":
        # A body that ends with the connection is whole wherever it ends: such an answer is cut in its head.
        head = sum(len(data) for _, data in pieces[: kinds.index("blank") + 1])
        raw = answer.raw
        return raw[: draw(st.integers(0, (head if answer.until_close else len(raw)) - 1))], True
    return b"".join(data for _, data in pieces), False


@dataclass
class Exchange:
    first: Response | OSError
    kept: bool
    second: Response
    arrivals: list[int]


def exchange(script: tuple[bytes | None, ...], max_body: int) -> Exchange:
    """One request answered by ``script``, then another on the same Connection, answered NEXT."""
    server = RawServer(*script, then=NEXT)
    connection = Connection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        try:
            first: Response | OSError = connection.request(HEAD, b"{}", max_body=max_body)
        except TimeoutError:
            pytest.fail("the reader waited for more than the answer it was sent needs")
        except OSError as error:
            first = error
        kept = connection.is_open
        second = connection.request(HEAD, b"{}", max_body=100)
    finally:
        connection.close()
        server.close()
    return Exchange(first, kept, second, server.arrivals)


PROPERTY = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(valid_answers())
def test_a_valid_answer_is_read_to_its_end_or_the_cap(answer: Answer) -> None:
    if answer.cut is not None:
        # Only what a strict reader needs, on a connection kept open: one reading past the cap would wait.
        script: tuple[bytes | None, ...] = (answer.raw[: answer.cut],)
    else:
        script = (answer.raw, None) if answer.until_close else (answer.raw,)

    result = exchange(script, answer.max_body)

    assert isinstance(result.first, Response), result.first
    assert result.first.status == answer.expected.status
    assert result.first.body == answer.expected.body
    assert len(result.first.body) <= answer.max_body
    assert answer.expected.headers.items() <= result.first.headers.items()
    assert result.kept is answer.kept
    assert (result.second.status, result.second.body) == (200, b"next")
    assert result.arrivals == ([1, 1] if answer.kept else [1, 2])


@PROPERTY
@given(broken_answers())
def test_a_broken_answer_is_an_error_and_its_connection_never_reused(broken: tuple[bytes, bool]) -> None:
    raw, then_close = broken

    result = exchange((raw, None) if then_close else (raw,), max_body=64 * 1024)

    assert isinstance(result.first, ProtocolError), result.first
    assert not result.kept
    assert (result.second.status, result.second.body) == (200, b"next")
    assert result.arrivals == [1, 2]
