"""Where the embedded S3 relay listens and the URLs clients are given (addresses.py,
storage/embedded.py ``relay_host``, pages.py ``client_s3_url``): pure functions, no sockets."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from modelhost.addresses import host_of, http_url, local_host, reachable_url
from modelhost.pages import client_s3_url, server_info
from modelhost.settings import Settings
from modelhost.storage.embedded import relay_host


@pytest.mark.parametrize(
    ("api_host", "relay"),
    [
        ("127.0.0.1", "127.0.0.1"),  # the default: loopback only
        ("0.0.0.0", "0.0.0.0"),  # --host 0.0.0.0: remote clients upload through it too
        ("10.1.2.3", "10.1.2.3"),
        ("[::1]", "::1"),
        ("", "127.0.0.1"),
    ],
)
def test_the_relay_listens_where_the_api_does(api_host: str, relay: str) -> None:
    assert relay_host(api_host) == relay


@pytest.mark.parametrize(
    ("bind", "dialled"),
    [("0.0.0.0", "127.0.0.1"), ("::", "::1"), ("10.1.2.3", "10.1.2.3"), ("localhost", "localhost")],
)
def test_a_local_client_dials_loopback_for_a_wildcard(bind: str, dialled: str) -> None:
    assert local_host(bind) == dialled


def test_urls() -> None:
    assert http_url("127.0.0.1", 9) == "http://127.0.0.1:9"
    assert http_url("::1", 9) == "http://[::1]:9"
    assert host_of("example.org:8765") == "example.org"
    assert host_of("[fd00::5]:8765") == "fd00::5"
    assert host_of(None) is None and host_of("") is None


def test_a_wildcard_url_names_the_host_the_client_reached() -> None:
    assert reachable_url("http://0.0.0.0:9000", "gpu-box") == "http://gpu-box:9000"
    assert reachable_url("http://[::]:9000", "fd00::5") == "http://[fd00::5]:9000"
    assert reachable_url("http://0.0.0.0:9000") == f"http://{socket.gethostname()}:9000"
    assert reachable_url("http://127.0.0.1:9000", "gpu-box") == "http://127.0.0.1:9000"
    assert reachable_url("https://s3.example.org", "gpu-box") == "https://s3.example.org"


def test_the_s3_url_clients_are_given(tmp_path: Path) -> None:
    relay = Settings(data_dir=tmp_path, s3_public_url="http://0.0.0.0:9100")  # as serve sets it
    assert client_s3_url(relay, "gpu-box") == "http://gpu-box:9100"
    assert server_info(relay, "gpu-box")["S3EndpointUrl"] == "http://gpu-box:9100"
    chosen = Settings(data_dir=tmp_path, s3_public_url="https://s3.example.org")
    assert client_s3_url(chosen, "gpu-box") == "https://s3.example.org"  # the setting wins
    other = Settings(data_dir=tmp_path, s3_endpoint_url="http://127.0.0.1:9000")
    assert client_s3_url(other, "gpu-box") == "http://127.0.0.1:9000"
    local = Settings(data_dir=tmp_path, embedded_s3=False)
    assert client_s3_url(local) is None
    assert server_info(local)["LocalObjectsDir"] == str(local.objects_dir)
