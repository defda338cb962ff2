"""Large request bodies spliced from the client's socket to the instance's (splice.py), end to
end on a raw keep-alive socket: the head goes first and the body after it, so the router has
to take the body from the socket (as a client sending a file does)."""

from __future__ import annotations

import json
import os
import random
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelhost.splice import SPLICE_MIN
from tests.fixtures.server import FIXTURE_MODELS, LiveServer, deploy, unique

pytestmark = pytest.mark.e2e

LIMIT = 6 * 2**20
PIECE = 64 * 1024
BIG = 3 * 2**20  # spliced on the way in; the answer is read whole and written back


@pytest.fixture(scope="module")
def echo(server: LiveServer) -> str:
    name = unique("splice")
    sm = server.client("sagemaker")
    assert deploy(sm, name, str(FIXTURE_MODELS / "echo"))["EndpointStatus"] == "InService"
    with connect(server) as sock:  # the router learns the path (a spliced body needs it)
        assert invoke(sock, name, b"warm") == (200, b"warm")
    return name


def connect(server: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def head(name: str, length: int) -> bytes:
    return (
        f"POST /endpoints/{name}/invocations HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def send_in_pieces(sock: socket.socket, data: bytes) -> None:
    for at in range(0, len(data), PIECE):
        sock.sendall(data[at : at + PIECE])


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    status, _, body = read_full(sock)
    return status, body


def read_full(sock: socket.socket) -> tuple[int, dict[bytes, bytes], bytes]:
    """One response, read exactly (the head a byte at a time: answers may be pipelined)."""
    top = b""
    while not top.endswith(b"\r\n\r\n"):
        more = sock.recv(1)
        assert more, f"connection closed before a whole response head: {top!r}"
        top += more
    lines = top[:-4].split(b"\r\n")
    fields = {k.lower(): v for k, v in (line.split(b": ", 1) for line in lines[1:])}
    length = int(fields[b"content-length"])
    body = bytearray()
    while len(body) < length:
        more = sock.recv(min(1 << 20, length - len(body)))
        assert more, "connection closed mid-body"
        body += more
    return int(lines[0].split()[1]), fields, bytes(body)


def invoke(sock: socket.socket, name: str, body: bytes) -> tuple[int, bytes]:
    sock.sendall(head(name, len(body)))
    send_in_pieces(sock, body)
    return read_response(sock)


def links(pid: int) -> list[str]:
    """What the process's descriptors point at."""
    out = []
    for p in Path(f"/proc/{pid}/fd").iterdir():
        try:
            out.append(os.readlink(p))
        except FileNotFoundError:  # closed while listing
            continue
    return out


def pipes(pid: int) -> int:
    return sum(link.startswith("pipe:") for link in links(pid))


def fd_count(pid: int) -> int:
    return len(links(pid))


def poll(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return check()


def router_pid(server: LiveServer) -> int:
    assert server.process is not None
    return server.process.pid


@pytest.fixture
def conn(server: LiveServer) -> Iterator[socket.socket]:
    with connect(server) as sock:
        yield sock


@pytest.mark.parametrize("size", [64 * 1024, 2**20, SPLICE_MIN, 3 * 2**20 + 1, LIMIT])
def test_large_bodies_echo_byte_exact_and_keep_alive_goes_on(
    conn: socket.socket, echo: str, size: int
) -> None:
    body = random.Random(size).randbytes(size)
    assert invoke(conn, echo, body) == (200, body)
    assert invoke(conn, echo, b"after") == (200, b"after")  # the same connection, next request


def test_requests_pipelined_behind_a_spliced_body_are_answered(
    conn: socket.socket, echo: str
) -> None:
    body = random.Random(3).randbytes(BIG + 7)
    conn.sendall(head(echo, len(body)))
    send_in_pieces(conn, body + head(echo, 5) + b"small" + head(echo, 4) + b"last")
    assert read_response(conn) == (200, body)
    assert read_response(conn) == (200, b"small")
    assert read_response(conn) == (200, b"last")


def test_the_body_is_spliced_through_a_pipe(
    server: LiveServer, conn: socket.socket, echo: str
) -> None:
    """While the rest of a large body is awaited the router holds a pipe for it, and gives it
    back after; the answer is the body."""
    pid = router_pid(server)
    before = pipes(pid)
    body = random.Random(1).randbytes(BIG)
    conn.sendall(head(echo, len(body)) + body[: 300 * 1024])
    assert poll(lambda: pipes(pid) >= before + 2), "no pipe for the body"
    send_in_pieces(conn, body[300 * 1024 :])
    assert read_response(conn) == (200, body)
    assert poll(lambda: pipes(pid) == before)


def test_over_the_limit_is_refused(conn: socket.socket, echo: str) -> None:
    conn.sendall(head(echo, LIMIT + 1))
    send_in_pieces(conn, b"z" * (LIMIT + 1))
    status, fields, answer = read_full(conn)
    assert status == 400, answer
    assert fields[b"x-amzn-errortype"].startswith(b"ValidationError")
    assert f"Request payload of {LIMIT + 1} bytes exceeds".encode() in answer
    assert invoke(conn, echo, b"next") == (200, b"next")  # the connection goes on


@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
def test_client_gone_mid_body_leaks_nothing(server: LiveServer, echo: str, reset: bool) -> None:
    pid = router_pid(server)
    with connect(server) as sock:  # an idle connection to the instance, before counting
        assert invoke(sock, echo, b"x" * 300_000)[0] == 200
    assert poll(lambda: True)
    before_fds, before_pipes = fd_count(pid), pipes(pid)
    sock = connect(server)
    sock.sendall(head(echo, BIG) + b"y" * (400 * 1024))
    assert poll(lambda: pipes(pid) >= before_pipes + 2), "no pipe for the body"
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()
    assert poll(lambda: pipes(pid) == before_pipes and fd_count(pid) <= before_fds), (
        f"fds {fd_count(pid)} (before {before_fds}), pipes {pipes(pid)} (before {before_pipes})"
    )
    with connect(server) as sock:  # and the router serves on
        body = random.Random(5).randbytes(BIG)
        assert invoke(sock, echo, body) == (200, body)


def test_slow_senders_and_slow_models_keep_their_answers(own_server: LiveServer) -> None:
    """A client that pauses mid-body longer than the invocation timeout still gets its echo
    (the timeout counts from the end of the body, as before splicing); a model slower than
    the timeout gets the same timeout error as with a small body."""
    own_server.env["MODELHOST_INVOCATION_TIMEOUT_S"] = "1"
    own_server.start()
    sm = own_server.client("sagemaker")
    echo, slow = unique("splice-echo"), unique("splice-slow")
    assert deploy(sm, echo, str(FIXTURE_MODELS / "echo"))["EndpointStatus"] == "InService"
    assert deploy(sm, slow, str(FIXTURE_MODELS / "slow"))["EndpointStatus"] == "InService"
    with connect(own_server) as sock:
        assert invoke(sock, echo, b"warm") == (200, b"warm")
        assert invoke(sock, slow, b"0")[0] == 200
        body = random.Random(7).randbytes(BIG)
        sock.sendall(head(echo, len(body)) + body[: 200 * 1024])
        time.sleep(1.5)  # the scenario itself: a pause longer than the timeout
        send_in_pieces(sock, body[200 * 1024 :])
        assert read_response(sock) == (200, body)
        small = invoke(sock, slow, b"3")
        large = invoke(sock, slow, b"3" + b" " * BIG)
        assert small[0] == large[0] == 424
        assert b"timed out" in large[1]
        error = json.loads(large[1])
        assert error == {**json.loads(small[1]), "message": error["message"]}
        assert invoke(sock, echo, b"still here") == (200, b"still here")


def test_client_gone_before_reading_its_answer_leaks_nothing(server: LiveServer, echo: str) -> None:
    """A client that sends a large body and leaves mid-answer (the answer is read whole and
    written back, not spliced): the router's pipes and descriptors for it are all given back,
    and it serves on."""
    pid = router_pid(server)
    with connect(server) as sock:
        assert invoke(sock, echo, b"x" * 300_000)[0] == 200
    before_fds, before_pipes = fd_count(pid), pipes(pid)
    first = links(pid)
    # one client: a second one sent while the first is in flight could need a second
    # connection to the instance (legitimately one more descriptor)
    with connect(server) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(head(echo, LIMIT))
        send_in_pieces(sock, b"w" * LIMIT)
        assert sock.recv(12) == b"HTTP/1.1 200"  # the answer is on its way: leave mid-answer
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    assert poll(lambda: pipes(pid) == before_pipes and fd_count(pid) <= before_fds), (
        f"fds {fd_count(pid)} (before {before_fds}), pipes {pipes(pid)} (before {before_pipes})"
        f"; now {sorted(links(pid))}, before {sorted(first)}"
    )
    with connect(server) as sock:
        body = random.Random(9).randbytes(LIMIT)
        assert invoke(sock, echo, body) == (200, body)
