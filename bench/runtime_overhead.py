"""Per-request overhead of the built-in model server (echo handler, concurrency 1).

Compares the handler chain called in-process with the same request sent over one keep-alive
loopback connection to `python -m modelhost.runtime serve`. Prints:
  - in-process handler time per call;
  - round-trip latency (mean, p50, p99) seen by a raw-socket client;
  - server CPU time per request (from /proc/<pid>/schedstat), and that minus the handler time,
    which is the server's own overhead.
Not run in CI:  .venv/bin/python bench/runtime_overhead.py [--requests 5000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ECHO = REPO / "tests" / "fixtures" / "models" / "echo"
BODY = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def in_process_us(model_dir: Path, n: int) -> float:
    sys.path.insert(0, str(REPO / "src"))
    from modelhost.runtime.handlers import HandlerOptions, load_handler

    handler = load_handler(HandlerOptions(model_dir=str(model_dir)))
    for _ in range(n // 10):
        handler.invoke(BODY, "application/json", "application/json", None)
    start = time.perf_counter()
    for _ in range(n):
        handler.invoke(BODY, "application/json", "application/json", None)
    return (time.perf_counter() - start) / n * 1e6


class _NullTransport:
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def protocol_us(model_dir: Path, n: int) -> float:
    """The server's Python code alone: parse + dispatch + respond, no sockets or event loop."""
    import asyncio

    from modelhost.runtime import server
    from modelhost.runtime.handlers import HandlerOptions, load_handler

    handler = load_handler(HandlerOptions(model_dir=str(model_dir)))
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    conn = server.HttpConnection(server.ServerState(handler, server.ServerOptions()))
    conn.connection_made(_NullTransport())  # type: ignore[arg-type]
    request = request_bytes()
    for _ in range(n // 10):
        conn.data_received(request)
    start = time.perf_counter()
    for _ in range(n):
        conn.data_received(request)
    loop.close()
    return (time.perf_counter() - start) / n * 1e6


def cpu_ns(pid: int) -> int:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def start_server(model_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MODELHOST_MODEL_DIR": str(model_dir), "SAGEMAKER_BIND_TO_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "modelhost.runtime", "serve"], env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /ping HTTP/1.1\r\nHost: b\r\n\r\n")
                if sock.recv(100).startswith(b"HTTP/1.1 200"):
                    return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("server did not become ready")


def request_bytes() -> bytes:
    lines = [b"POST /invocations HTTP/1.1", b"Host: bench"]
    lines += [f"{k}: {v}".encode() for k, v in HEADERS.items()]
    lines.append(b"Content-Length: %d" % len(BODY))
    return b"\r\n".join(lines) + b"\r\n\r\n" + BODY


def read_response(sock: socket.socket) -> int:
    """Read one response; return its total length (headers + Content-Length body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(rest) < length:
        rest += sock.recv(65536)
    return len(head) + 4 + length


def client_loop(port: int, n: int, pid: int) -> tuple[list[float], float]:
    request = request_bytes()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(request)
        size = read_response(sock)
        for _ in range(n // 10):  # warm-up
            sock.sendall(request)
            _recv_exact(sock, size)
        timings = []
        cpu_before = cpu_ns(pid)
        for _ in range(n):
            start = time.perf_counter()
            sock.sendall(request)
            _recv_exact(sock, size)
            timings.append(time.perf_counter() - start)
        server_cpu = (cpu_ns(pid) - cpu_before) / n / 1e3
    return timings, server_cpu


def _recv_exact(sock: socket.socket, size: int) -> None:
    got = 0
    while got < size:
        got += len(sock.recv(size - got))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    n = parser.parse_args().requests
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "echo"
        shutil.copytree(ECHO, model_dir, ignore=shutil.ignore_patterns("__pycache__"))
        handler_us = in_process_us(model_dir, n)
        python_us = protocol_us(model_dir, n)
        port = free_port()
        proc = start_server(model_dir, port)
        try:
            timings, server_cpu_us = client_loop(port, n, proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
    us = sorted(t * 1e6 for t in timings)
    print(f"requests                      {n} (echo handler, c=1, one keep-alive connection)")
    print(f"in-process handler chain      {handler_us:8.2f} us/call")
    print(f"server Python code, no I/O    {python_us:8.2f} us/request (parse+chain+respond)")
    print(
        f"round trip mean / p50 / p99   {statistics.fmean(us):8.2f} / {us[len(us) // 2]:.2f}"
        f" / {us[int(len(us) * 0.99)]:.2f} us"
    )
    print(f"server CPU per request        {server_cpu_us:8.2f} us")
    print(f"server overhead (CPU-handler) {server_cpu_us - handler_us:8.2f} us")
    print(
        f"round trip minus handler      {statistics.fmean(us) - handler_us:8.2f} us (incl. client)"
    )


if __name__ == "__main__":
    main()
