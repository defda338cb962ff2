"""Unsafe model archives end to end: each kind goes through CreateModel, CreateEndpointConfig and
CreateEndpoint on a live server, and the endpoint fails with a FailureReason that names what was
wrong (the extraction unit tests are tests/unit/test_archive_fuzz.py and test_artifacts.py)."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.server import LiveServer, unique, wait_status

pytestmark = pytest.mark.e2e

CAP = 1024 * 1024  # the server's max_artifact_bytes here


def archive(members: list[tuple[str, bytes, int, str]]) -> bytes:
    """(name, type, size, linkname): regular files get that many zero bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, size, link in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            if kind == tarfile.REGTYPE:
                info.size = size
                tar.addfile(info, io.BytesIO(b"\0" * size))
            else:
                tar.addfile(info)
    return gzip.compress(raw.getvalue(), compresslevel=1)


def header_bomb() -> bytes:
    info = tarfile.TarInfo("././@LongLink")
    info.type, info.size = tarfile.GNUTYPE_LONGNAME, 8 * 1024 * 1024
    return gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * (info.size + 1024), 1)


UNSAFE = {
    "absolute": (archive([("/etc/cron.d/x", tarfile.REGTYPE, 1, "")]),
                 "Refused unsafe archive member '/etc/cron.d/x': absolute paths are not allowed"),
    "dotdot": (archive([("a/../../x", tarfile.REGTYPE, 1, "")]),
               "Refused unsafe archive member 'a/../../x': path escapes the model directory"),
    "symlink": (archive([("l", tarfile.SYMTYPE, 0, "/etc/passwd")]),
                "Refused unsafe archive member 'l': symbolic links are not allowed"),
    "hardlink": (archive([("h", tarfile.LNKTYPE, 0, "/etc/passwd")]),
                 "Refused unsafe archive member 'h': hard links are not allowed"),
    "device": (archive([("d", tarfile.CHRTYPE, 0, "")]),
               "Refused unsafe archive member 'd': device files are not allowed"),
    "size-bomb": (archive([("big", tarfile.REGTYPE, 2 * CAP, "")]),
                  f"is too large: more than {CAP} bytes when extracted"),
    "header-bomb": (header_bomb(), "an extended header of 8388608 bytes"),
    "truncated": (archive([("m", tarfile.REGTYPE, 5000, "")])[:-60],
                  "is not a valid tar.gz archive"),
}  # fmt: skip


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(
        tmp_path_factory.mktemp("unsafe"), env={"MODELHOST_MAX_ARTIFACT_BYTES": str(CAP)}
    ).start()
    yield live
    live.stop()


def test_each_unsafe_archive_fails_its_endpoint_with_a_reason_naming_it(
    capped_server: LiveServer, tmp_path: Path
) -> None:
    sm = capped_server.client("sagemaker")
    names = {}
    for kind, (data, _) in UNSAFE.items():
        path = tmp_path / f"{kind}.tar.gz"
        path.write_bytes(data)
        name = names[kind] = unique(kind)
        sm.create_model(ModelName=name, PrimaryContainer={"ModelDataUrl": str(path)})
        sm.create_endpoint_config(
            EndpointConfigName=name,
            ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": name,
                                 "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}],
        )  # fmt: skip
        sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    for kind, (_, reason) in UNSAFE.items():
        desc = wait_status(sm, names[kind], {"InService", "Failed"}, timeout=120)
        assert desc["EndpointStatus"] == "Failed", kind
        assert reason in desc["FailureReason"], (kind, desc["FailureReason"])
    assert not Path("/etc/cron.d/x").exists()
