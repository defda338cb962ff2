"""Fleets start an instance again on a fresh port when its port was taken (a fake backend)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from modelhost.backends.local import InstanceFailed
from modelhost.controller.fleet import Fleet, FleetFailed, Fleets, VariantPlan
from modelhost.instance_types import Profile
from modelhost.settings import Settings


class FakeBackend:
    local_model_copy = True

    def __init__(self, failures: list[str]) -> None:
        self.failures = failures
        self.started: list[int] = []
        self.stopped: list[int] = []

    def start(self, spec: Any) -> int:
        self.started.append(len(self.started))
        return self.started[-1]

    async def wait_ready(self, inst: int, timeout: float) -> None:
        if inst < len(self.failures):
            raise InstanceFailed(self.failures[inst])

    async def stop(self, inst: int, grace: float) -> None:
        self.stopped.append(inst)


def run(failures: list[str], tmp_path: Path) -> tuple[FakeBackend, Fleet]:
    backend = FakeBackend(failures)
    fleets = Fleets(Settings(data_dir=tmp_path), None, backend, None)  # type: ignore[arg-type]
    model_dir = tmp_path / "model"
    model_dir.mkdir(exist_ok=True)
    plan = VariantPlan("v", model_dir, {}, None, Profile(1, 1.0), 1.0, 5.0)
    fleet = Fleet("cfg", {"v": plan})
    asyncio.run(fleets.grow("ep", fleet, "v", 1))
    return backend, fleet


TAKEN = "cannot listen on 127.0.0.1:1234: [Errno 98] address already in use"


def test_a_taken_port_is_retried(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    backend, fleet = run([TAKEN], tmp_path)
    assert "found its port taken; starting another" in caplog.text  # says why a second start
    assert backend.started == [0, 1] and backend.stopped == [0]
    started: list[object] = list(fleet.instances["v"])
    assert started == [1]


def test_other_failures_are_not_retried(tmp_path: Path) -> None:
    with pytest.raises(FleetFailed, match="No module named"):
        run(["ModuleNotFoundError: No module named 'x'"], tmp_path)


def test_retries_are_bounded(tmp_path: Path) -> None:
    with pytest.raises(FleetFailed, match="address already in use"):
        run([TAKEN] * 10, tmp_path)
