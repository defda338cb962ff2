"""GPU instance types: each instance gets its own GPUs through CUDA_VISIBLE_DEVICES (a machine
with GPUs is simulated with MODELHOST_GPU_COUNT; nothing here needs a real GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.procs import instance_pids
from tests.fixtures.server import FIXTURE_MODELS, LiveServer, deploy, unique, wait_status

pytestmark = pytest.mark.e2e


def _visible_devices(pid: int) -> str:
    for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if item.startswith(b"CUDA_VISIBLE_DEVICES="):
            return item.split(b"=", 1)[1].decode()
    raise AssertionError(f"instance {pid} has no CUDA_VISIBLE_DEVICES")


def test_each_gpu_instance_gets_its_own_gpu(own_server: LiveServer) -> None:
    own_server.env["MODELHOST_GPU_COUNT"] = "2"
    own_server.start()
    sm = own_server.client("sagemaker")
    name = unique("gpu")
    desc = deploy(sm, name, str(FIXTURE_MODELS / "echo"), instance_type="ml.g5.xlarge", count=2)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    devices = sorted(_visible_devices(pid) for pid in instance_pids(own_server.data_dir))
    assert devices == ["0", "1"]
    # A third instance has no GPU left: the update fails clearly and the endpoint keeps serving.
    sm.update_endpoint_weights_and_capacities(
        EndpointName=name,
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 3}],
    )
    desc = wait_status(sm, name, {"InService"})
    assert "needs 1 GPU(s); 0 of this machine's 2 are free" in desc["FailureReason"]
    variant = desc["ProductionVariants"][0]
    assert (variant["CurrentInstanceCount"], variant["DesiredInstanceCount"]) == (2, 2)


def test_gpu_types_run_on_the_cpu_without_gpus(own_server: LiveServer) -> None:
    own_server.env["MODELHOST_GPU_COUNT"] = "0"
    own_server.start()
    sm = own_server.client("sagemaker")
    name = unique("nogpu")
    desc = deploy(sm, name, str(FIXTURE_MODELS / "echo"), instance_type="ml.p3.2xlarge")
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    [pid] = instance_pids(own_server.data_dir)
    assert _visible_devices(pid) == ""
