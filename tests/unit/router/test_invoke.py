"""The InvokeEndpoint hot path's own pieces (router/invoke.py); end to end in tests/e2e."""

from __future__ import annotations

import re
from pathlib import Path

from modelhost.router.invoke import InvokePath
from modelhost.router.routing import RouteTable
from modelhost.settings import Settings


def test_request_ids_are_32_hex_digits_unique_and_differ_between_processes(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path)
    one = InvokePath(RouteTable(), None, settings)  # type: ignore[arg-type]
    other = InvokePath(RouteTable(), None, settings)  # type: ignore[arg-type]
    ids = [one.new_rid() for _ in range(10_000)]
    assert all(re.fullmatch(rb"[0-9a-f]{32}", rid) for rid in ids)
    assert len(set(ids)) == len(ids)
    assert ids[0][16:] != ids[1][16:] and not ids[0].endswith(b"1")  # scrambled, not a count
    assert one.new_rid()[:16] != other.new_rid()[:16]  # a random half per process
