"""The embedded S3 server's front door: a byte-for-byte TCP relay that checks each request's
signature (when the server has access keys), then rewrites its head so that SeaweedFS serves it
and SSE-KMS requests succeed.

- With access keys (auth/), the request head is verified first (SigV4 with S3's rules, header
  or presigned URL, through ``check``): a refusal is S3's XML error (``SignatureDoesNotMatch``,
  ``InvalidAccessKeyId``, ``AccessDenied``, ``RequestTimeTooSkewed`` ...) and the connection
  closes. The body streams through unread, so its hash is taken as ``x-amz-content-sha256``
  declares it (signed), not recomputed; an ``aws-chunked`` body's chunk signatures are not
  checked, only the seed signature of the head. Without keys, any credentials will do.
- Authentication is then dropped (the ``Authorization`` header, a session token, presigned-URL query
  parameters): SeaweedFS serves unsigned requests as its ``anonymous`` identity, which the
  embedded server's configuration makes an admin. An unknown access key would otherwise be
  refused, and SeaweedFS lists buckets only to identities it knows.
- The SSE-KMS headers are dropped: the SageMaker SDK uploads ``sourcedir.tar.gz`` (and repacked
  models) with ``ServerSideEncryption: aws:kms`` by default. SeaweedFS refuses that without a key
  provider, and its one built-in provider (``local``) keeps keys in memory only, so objects
  would become unreadable after a restart. The object is stored unencrypted and reads back.

Each client connection carries one request (``Connection: close`` is set on it): after the
request head is rewritten the relay copies bytes in both directions until either side closes.
It runs its own event loop in a daemon thread, so it works the same from ``modelhost serve``
and from tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable

DROPPED = frozenset(
    {
        b"authorization",
        b"x-amz-security-token",
        b"x-amz-server-side-encryption",
        b"x-amz-server-side-encryption-aws-kms-key-id",
        b"x-amz-server-side-encryption-context",
        b"x-amz-server-side-encryption-bucket-key-enabled",
        b"connection",
        b"keep-alive",
    }
)
MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10.0
_CHUNK = 256 * 1024
# (method, request target, headers with lower-case names) -> the refusal as S3 answers it
# (status, headers, body; auth/gate.py ``Gate.s3_check`` frames it), or None to let it through.
Check = Callable[
    [str, str, list[tuple[bytes, bytes]]], tuple[int, list[tuple[bytes, bytes]], bytes] | None
]


# Presigned URLs (SigV4 and SigV2) carry their signature in the query string.
_AUTH_PARAMS = frozenset(
    {
        b"x-amz-algorithm",
        b"x-amz-credential",
        b"x-amz-date",
        b"x-amz-expires",
        b"x-amz-signedheaders",
        b"x-amz-signature",
        b"x-amz-security-token",
        b"awsaccesskeyid",
        b"signature",
        b"expires",
    }
)


def rewrite_head(head: bytes) -> bytes:
    """The request head without credentials or SSE-KMS headers, asking the upstream to close
    the connection after answering."""
    lines = head.split(b"\r\n")
    kept = [_without_query_auth(lines[0])]
    for line in lines[1:]:
        if not line:
            continue
        name = line.split(b":", 1)[0].strip().lower()
        if name not in DROPPED:
            kept.append(line)
    kept.append(b"Connection: close")
    return b"\r\n".join(kept) + b"\r\n\r\n"


def _without_query_auth(request_line: bytes) -> bytes:
    parts = request_line.split(b" ")
    if len(parts) != 3 or b"?" not in parts[1]:
        return request_line
    path, _, query = parts[1].partition(b"?")
    params = [p for p in query.split(b"&") if p.split(b"=", 1)[0].lower() not in _AUTH_PARAMS]
    target = path + (b"?" + b"&".join(params) if params else b"")
    return b" ".join((parts[0], target, parts[2]))


class S3Front:
    """Listens on ``sock`` (already bound) and relays to ``upstream`` (host, port)."""

    def __init__(
        self, sock: socket.socket, upstream: tuple[str, int], check: Check | None = None
    ) -> None:
        self.sock = sock
        self.upstream = upstream
        self.check = check
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="s3-front", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the S3 front did not start")

    def stop(self, timeout: float = 10.0) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(stopped.set)
            self._thread.join(timeout)
        with contextlib.suppress(OSError):
            self.sock.close()

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._relay, sock=self.sock, limit=MAX_HEAD_BYTES)
        self._ready.set()
        async with server:
            await self._stopped.wait()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
            refusal = self._refusal(head)
            if refusal is not None:
                writer.write(refusal)
                await writer.drain()
                return
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.upstream), CONNECT_TIMEOUT_S
            )
            upstream = up_writer
            up_writer.write(rewrite_head(head))
            # The exchange ends when the upstream has answered and closed (it was asked to);
            # the client may keep its side open, waiting to reuse the connection.
            sending = asyncio.create_task(_pipe(reader, up_writer))
            try:
                await _pipe(up_reader, writer)
            finally:
                sending.cancel()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            for w in (upstream, writer):
                if w is not None:
                    w.close()

    def _refusal(self, head: bytes) -> bytes | None:
        """The error answer for a request the check refuses (None: let it through)."""
        if self.check is None:
            return None
        method, target, headers = parse_head(head)
        refusal = self.check(method, target, headers)
        if refusal is None:
            return None
        status, out, body = refusal
        lines = b"".join(b"%s: %s\r\n" % pair for pair in out)
        return b"HTTP/1.1 %d %s\r\n%scontent-length: %d\r\nconnection: close\r\n\r\n%s" % (
            status,
            _REASONS.get(status, b"Error"),
            lines,
            len(body),
            body,
        )


_REASONS = {400: b"Bad Request", 403: b"Forbidden"}


def parse_head(head: bytes) -> tuple[str, str, list[tuple[bytes, bytes]]]:
    """The method, request target and headers (lower-case names) of a request head."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    method = parts[0].decode("latin-1")
    target = parts[1].decode("latin-1") if len(parts) > 1 else "/"
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers.append((name.strip().lower(), value.strip()))
    return method, target, headers


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(_CHUNK):
            dst.write(data)
            await dst.drain()
    except OSError:
        dst.close()
