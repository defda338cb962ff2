"""Raw HTTP fuzzing of the front server (httpserver.py, serving.py) with its fast path: broken
request lines, bad chunked encoding, oversized heads, slowloris, pipelining abuse, half-closed
sockets, garbage after a valid request, a huge Content-Length with no body.

The oracle, for every connection: no 5xx; the server answers or closes within a bound (never a
connection left hanging); afterwards a normal request on a new connection is answered, and no
connection or fast-path request is left behind in the server."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from modelhost.fastpath import Reply, head_bytes
from modelhost.http11 import Payload
from modelhost.serving import Server
from tests.e2e.test_httpserver import MAX_BODY, Fast, app, free_port, running

pytestmark = pytest.mark.e2e

IDLE_S = 1.0
HEAD_S = 0.5
# how long a connection may stay silent before the oracle calls it hung: the idle timeout plus
# the sweep's period and slack for a loaded 2-core machine
HANG_S = IDLE_S + 4.0
GOOD = b"POST /fast HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
GOOD_ASGI = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"


LATER = b"POST /later HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"


class LaterFast(Fast):
    """Fast's /fast, and /later answered on a later turn of the loop, as the real fast path
    answers once the instance has (so that the client's next bytes or EOF arrive first)."""

    def accepts(self, method: bytes, path: bytes) -> bool:
        return path in (b"/fast", b"/later")

    def dispatch(
        self, path: bytes, headers: list[tuple[bytes, bytes]], body: Payload, reply: Reply
    ) -> None:
        if path == b"/fast":
            super().dispatch(path, headers, body, reply)
            return
        answer = head_bytes(201, [(b"x-app", b"later")])
        asyncio.get_running_loop().call_later(0.02, reply, answer, b"later")


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[tuple[str, int], Server]]:
    port = free_port()
    server = Server(app, "127.0.0.1", port, MAX_BODY, drain_s=5, fast=LaterFast(),
                    idle_timeout_s=IDLE_S, head_timeout_s=HEAD_S)  # fmt: skip
    with running(server):
        yield ("127.0.0.1", port), server


def talk(address: tuple[str, int], parts: list[bytes], half_close: bool) -> tuple[bytes, bool]:
    """Send the parts, optionally shut our side, read until EOF; (answer, closed in time)."""
    with socket.create_connection(address, timeout=HANG_S) as conn:
        try:
            for part in parts:
                conn.sendall(part)
            if half_close:
                conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may close on a refusal while we still send
        got = b""
        deadline = time.monotonic() + HANG_S * 2
        while time.monotonic() < deadline:
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                return got, False
            except OSError:
                return got, True  # reset by the peer: closed
            if not chunk:
                return got, True
            got += chunk
        return got, False


def statuses(answer: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]


def healthy(address: tuple[str, int], server: Server) -> None:
    answer, _ = talk(address, [GOOD.replace(b"Host: h", b"Connection: close")], False)
    assert answer.startswith(b"HTTP/1.1 201"), answer
    deadline = time.monotonic() + HANG_S
    while server.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.in_flight == 0


BROKEN = st.sampled_from(
    [
        b"GARBAGE\r\n\r\n",
        b"POST /fast HTTP/9.9\r\n\r\n",
        b"POST  HTTP/1.1\r\n\r\n",
        b"\x00\x01\x02\xff\r\n\r\n",
        b"POST /fast HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST /fast HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST /fast HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        b"POST /fast HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
        b"POST /fast HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
        b"POST /fast HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n",
        b"POST /fast HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"POST /fast HTTP/1.1\r\n: empty-name\r\n\r\n",
        b"POST /fast HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
        b"POST /fast HTTP/1.1\r\nContent-Length: 100\r\n\r\nshort",
        b"POST /x HTTP/1.1\r\nContent-Length: 5000\r\n\r\n" + b"a" * 5000,
        b"GET /%zz%00/../.. HTTP/1.1\r\n\r\n",
        b"POST /fast HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
        b"POST /fast HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 9000 + b"\r\n",
        b"POST /fast HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        b"POST /fast HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        b"POST /fast HTTP/1.1\r\nHost: h\r\n",  # a head that never ends
        b"",
    ]
)


@st.composite
def conversations(draw: st.DrawFn) -> tuple[list[bytes], bool, int]:
    """What one client sends on one connection: good and broken requests, pipelined, split at
    random points, maybe garbage after a valid request, maybe half-closed; and how many valid
    requests come before anything broken (each must get its 2xx, in order)."""
    pieces: list[bytes] = []
    for _ in range(draw(st.integers(1, 4))):
        pieces.append(draw(st.one_of(st.sampled_from([GOOD, GOOD_ASGI, LATER]), BROKEN)))
    if draw(st.booleans()):
        pieces.append(draw(st.binary(min_size=1, max_size=64)))  # garbage after
    if draw(st.booleans()):
        pieces = [GOOD] * draw(st.integers(17, 40)) + pieces  # more than the pipeline bound
    data = b"".join(pieces)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    parts = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    return [p for p in parts if p], draw(st.booleans()), leading_valid(pieces, VALID)


VALID = (GOOD, GOOD_ASGI, LATER)


def leading_valid(pieces: list[bytes], valid: tuple[bytes, ...]) -> int:
    count = 0
    for piece in pieces:
        if piece not in valid:
            break
        count += 1
    return count


@seed(14)
@settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(conv=conversations())
def test_raw_http_fuzz_gets_answers_or_a_close_never_a_hang_or_5xx(
    served: tuple[tuple[str, int], Server], conv: tuple[list[bytes], bool, int]
) -> None:
    address, server = served
    parts, half_close, valid = conv
    answer, closed = talk(address, parts, half_close or not parts)
    assert closed or answer, "connection hung: no answer and no close"
    codes = statuses(answer)
    assert all(s < 500 for s in codes), answer[:500]
    assert all(200 <= s < 300 for s in codes[:valid]) and len(codes) >= valid, (valid, codes)
    healthy(address, server)


def test_slowloris_head_is_refused_with_408_in_bounded_time(
    served: tuple[tuple[str, int], Server],
) -> None:
    """A head trickling in faster than the idle timeout but never ending gets 408 and a close
    after the head timeout, instead of holding the connection forever."""
    address, server = served
    with socket.create_connection(address, timeout=HANG_S) as conn:
        conn.sendall(b"POST /fast HTTP/1.1\r\n")
        started = time.monotonic()
        got = b""
        # a header line every IDLE_S / 4: the connection is never idle long enough to be swept
        for i in range(int(HANG_S * 8)):
            try:
                conn.sendall(b"X-Slow-%d: 1\r\n" % i)
            except OSError:
                break
            conn.settimeout(IDLE_S / 4)
            try:
                chunk = conn.recv(4096)
            except TimeoutError:
                continue
            got += chunk
            if not chunk or b"\r\n\r\n" in got:
                break
        waited = time.monotonic() - started
    assert got.startswith(b"HTTP/1.1 408"), got
    assert waited < HANG_S, waited
    healthy(address, server)


def test_half_closed_client_still_gets_its_answer(
    served: tuple[tuple[str, int], Server],
) -> None:
    address, server = served
    answer, closed = talk(address, [GOOD + GOOD_ASGI], True)
    assert statuses(answer) == [201, 200] and closed
    healthy(address, server)


@pytest.mark.parametrize("half_close", [False, True])
def test_pipelined_requests_before_a_broken_one_are_answered_first(
    served: tuple[tuple[str, int], Server], half_close: bool
) -> None:
    """Found by bench/fuzz_http.py: the 400 for the broken request was written at once and the
    connection closed, losing the answers to the valid requests pipelined before it."""
    address, server = served
    answer, closed = talk(address, [LATER * 3 + GOOD_ASGI + b"GARBAGE\r\n\r\n"], half_close)
    assert statuses(answer) == [201, 201, 201, 200, 400] and closed, answer
    healthy(address, server)


def test_half_closed_client_gets_answers_that_come_later(
    served: tuple[tuple[str, int], Server],
) -> None:
    """Found by bench/fuzz_http.py: a client that sends its requests and shuts its sending
    side got no answer at all from the real fast path (the EOF closed the connection)."""
    address, server = served
    answer, closed = talk(address, [LATER * 2], True)
    assert statuses(answer) == [201, 201] and closed, answer
    healthy(address, server)
