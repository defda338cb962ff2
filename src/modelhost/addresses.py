"""Bind addresses and the URLs clients are given for them.

A wildcard bind address (``0.0.0.0``, ``::``) says where a server listens, not an address a
client can dial: a URL handed to clients names the host the client reached the server at (the
``Host`` of its request), else this machine's name; a client on this machine dials loopback.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit, urlunsplit

LOOPBACK = "127.0.0.1"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def http_url(host: str, port: int) -> str:
    """``http://host:port``, an IPv6 address in brackets."""
    host = host.strip("[]")
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def local_host(bind_host: str) -> str:
    """The address a client on this machine dials for a server bound to ``bind_host``."""
    host = bind_host.strip("[]")
    if is_wildcard(host):
        return "::1" if ":" in host else LOOPBACK
    return host or LOOPBACK


def host_of(host_header: str | None) -> str | None:
    """The host name of a ``Host`` header (``name:port``, ``[v6]:port``), None if unusable."""
    if not host_header:
        return None
    try:
        return urlsplit(f"//{host_header.strip()}").hostname or None
    except ValueError:
        return None


def reachable_url(url: str, client_host: str | None = None) -> str:
    """``url`` as a client can use it: a wildcard host is replaced by ``client_host`` (where
    the client reached this server), else by this machine's name; any other URL unchanged."""
    parts = urlsplit(url)
    if parts.hostname is None or not is_wildcard(parts.hostname):
        return url
    name = client_host or socket.gethostname()
    netloc = f"[{name}]" if ":" in name else name
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
