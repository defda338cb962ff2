"""A 30-second slice of the soak (bench/soak.py): steady load on the demo endpoint (2
instances) plus control-plane churn; no unexpected failure, no leaked fds or processes."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


def _soak_module() -> Any:
    if str(SOAK.parent) not in sys.path:
        sys.path.insert(0, str(SOAK.parent))  # bench/ is scripts, not a package
    return importlib.import_module("soak")


def test_soak_slice_loses_nothing_and_leaks_nothing() -> None:
    report = _soak_module().soak(30.0, clients=8, instances=2, warmup=3.0)
    assert report.invocations > 1000, report
    assert report.failures == 0, report.failure_samples
    assert report.churn_cycles >= 1 and report.churn_failures == 0, report.churn_samples
    start, end = report.start, report.end
    assert end.fds <= start.fds and end.sockets <= start.sockets, (start, end)
    assert end.descendants <= start.descendants, (start, end)
    assert end.instances == start.instances == 2, (start, end)
