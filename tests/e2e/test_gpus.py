"""GPU instance types: each instance gets its own GPUs through CUDA_VISIBLE_DEVICES (a machine
with GPUs is simulated with MODELHOST_GPU_COUNT; nothing here needs a real GPU)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.procs import instance_env, instance_pids, wait_zygote
from tests.fixtures.server import FIXTURE_MODELS, LiveServer, deploy, unique, wait_status

pytestmark = pytest.mark.e2e


def _visible_devices(rt: Any, endpoint: str, instances: int) -> list[str]:
    seen = instance_env(rt, endpoint, ["CUDA_VISIBLE_DEVICES"], instances)
    return sorted(env["CUDA_VISIBLE_DEVICES"] or "" for env in seen.values())


def test_each_gpu_instance_gets_its_own_gpu(own_server: LiveServer) -> None:
    own_server.env["MODELHOST_GPU_COUNT"] = "2"
    own_server.start()
    wait_zygote(own_server.log_path)  # forked instances get their own devices too
    sm = own_server.client("sagemaker")
    name = unique("gpu")
    desc = deploy(sm, name, str(FIXTURE_MODELS / "environ"), instance_type="ml.g5.xlarge", count=2)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    rt = own_server.client("sagemaker-runtime")
    assert _visible_devices(rt, name, 2) == ["0", "1"]
    assert own_server.log_tail(400).count("(forked from the zygote)") == 2
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
    desc = deploy(sm, name, str(FIXTURE_MODELS / "environ"), instance_type="ml.p3.2xlarge")
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    assert len(instance_pids(own_server.data_dir)) == 1
    assert _visible_devices(own_server.client("sagemaker-runtime"), name, 1) == [""]
