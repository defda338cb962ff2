"""Free loopback ports, for the processes modelhost starts (instances, the embedded S3 server).

A port found free may be taken by another process before the one it is meant for binds it:
callers retry on a fresh port when that happens (see controller/fleet.py, storage/embedded.py).
"""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def bindable(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port_pair(offset: int, host: str = "127.0.0.1") -> int:
    """A free port ``p`` such that ``p + offset`` is free too (a server that derives one port
    from another)."""
    for _ in range(100):
        port = free_port(host)
        if port + offset < 65536 and bindable(port + offset, host):
            return port
    raise OSError(f"no two free ports {offset} apart on {host}")
