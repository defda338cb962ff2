"""The ray backend on a real two-node Ray cluster on loopback (``ray.cluster_utils.Cluster``):
an endpoint's instances spread over both nodes and answer real boto3 invocations, its model
data comes from the embedded S3 server, a killed actor or a lost node is replaced on a node
that is left, and a batch transform job's files go to instances on both nodes. Every socket
Ray listens on is on 127.0.0.1.

One cluster and one server for the module (a cluster takes ~5 s to start); the test that
removes a node runs last.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
import ray
from botocore.exceptions import ClientError
from ray._private import ray_constants
from ray.cluster_utils import Cluster

from tests.e2e.async_helpers import deploy_async
from tests.fixtures.server import (
    FIXTURE_MODELS,
    REGION,
    LiveServer,
    deploy,
    pack,
    unique,
    wait_gone,
)
from tests.fixtures.transform import job_request, run_job

pytestmark = pytest.mark.e2e

NAMESPACE = "modelhost"
BUCKET = "sagemaker-us-east-1-123456789012"
# Room on each node for two ml.m5.large instances (2 vCPU, 8 GiB each): all of an endpoint's
# instances fit on the node that is left when the other is lost.
NODE: dict[str, Any] = {"num_cpus": 4, "memory": 20 * 2**30, "object_store_memory": 100 * 2**20}
# Node loss noticed in ~1.5 s instead of Ray's default ~15 s; no idle workers started ahead
# (each is a Python process importing Ray: on 2 cores they slow everything else down).
SYSTEM_CONFIG = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 3,
    "enable_worker_prestart": False,
    "prestart_worker_first_driver": False,
}
REPLACE_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # Keeps --node-ip-address=127.0.0.1 as given (../shared/DESIGN.md, Ray): Ray reads the
    # variable when imported, so this process is told through its constant, and the processes
    # started from here (nodes, the modelhost server) through the variable.
    saved = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    saved_constant = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    started = Cluster(
        initialize_head=True,
        head_node_args={
            "node_ip_address": "127.0.0.1",
            "include_dashboard": False,
            "_system_config": SYSTEM_CONFIG,
            **NODE,
        },
    )
    try:
        assert started.address.startswith("127.0.0.1:"), started.address
        started.add_node(node_ip_address="127.0.0.1", **NODE)
        started.wait_for_nodes()
        ray.init(address=started.address, namespace="tests", log_to_driver=False)
        yield started
    finally:
        ray.shutdown()
        started.shutdown()  # type: ignore[no-untyped-call]
        ray_constants.ENABLE_RAY_CLUSTER = saved_constant
        if saved is None:
            os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        else:
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = saved


@pytest.fixture(scope="module")
def ray_server(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("ray-server"))
    live.env.update(
        {
            "MODELHOST_BACKEND": "ray",
            "MODELHOST_RAY_ADDRESS": cluster.address,
            "MODELHOST_EMBEDDED_S3": "true",
            "MODELHOST_STOP_GRACE_S": "2",
        }
    )
    live.start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def model_url(ray_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The node fixture's model.tar.gz in the embedded S3 server (real boto3)."""
    archive = pack(FIXTURE_MODELS / "node", tmp_path_factory.mktemp("model") / "model.tar.gz")
    s3 = s3_client(ray_server)
    s3.upload_file(str(archive), BUCKET, "ray/model.tar.gz")
    return f"s3://{BUCKET}/ray/model.tar.gz"


@pytest.fixture(scope="module")
def endpoint(ray_server: LiveServer, model_url: str) -> str:
    name = unique("ray")
    desc = deploy(ray_server.client("sagemaker"), name, model_url, count=2)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    return name


def s3_client(server: LiveServer) -> Any:
    url = (server.data_dir / "s3" / "endpoint").read_text().strip()
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="any",
        aws_secret_access_key="any",
    )


def alive_nodes() -> set[str]:
    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    return {n["NodeID"] for n in nodes if n["Alive"]}


def actors_of(endpoint: str) -> list[str]:
    named = ray.util.list_named_actors(all_namespaces=True)
    return sorted(
        a["name"]
        for a in named
        if a["namespace"] == NAMESPACE and a["name"].startswith(f"{endpoint}/")
    )


def invoke(server: LiveServer, endpoint: str) -> dict[str, str]:
    rt = server.client("sagemaker-runtime")
    resp = rt.invoke_endpoint(EndpointName=endpoint, Body=b"1", ContentType="text/csv")
    answer: dict[str, str] = json.loads(resp["Body"].read())
    return answer


def nodes_answering(server: LiveServer, endpoint: str, calls: int = 12) -> set[str]:
    return {invoke(server, endpoint)["node"] for _ in range(calls)}


def wait_for(
    check: Any, what: str, timeout: float = REPLACE_TIMEOUT_S, server: LiveServer | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # an invocation during the replacement
            last = exc
        else:
            if last:
                return last
        time.sleep(0.2)
    log = f"\nserver log:\n{server.log_tail(60)}" if server is not None else ""
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r}){log}")


def ray_pids() -> list[int]:
    """Ray's own processes on this machine (GCS, raylets, workers) and the modelhost server."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            names = (b"ray/core/src", b"gcs_server", b"raylet", b"default_worker.py")
            if cmd.startswith(b"ray::") or any(name in cmd for name in names):
                pids.append(int(entry))
    return pids


def test_every_ray_socket_listens_on_loopback(cluster: Cluster, endpoint: str) -> None:
    pids = set(ray_pids())
    assert pids, "no Ray process found"
    out = subprocess.run(["ss", "-tlnpH"], capture_output=True, text=True, timeout=10, check=True)
    mine = [
        line.split()[3]
        for line in out.stdout.splitlines()
        if any(f"pid={pid}," in line for pid in pids)
    ]
    assert mine, out.stdout
    loopback = ("127.0.0.1:", "[::ffff:127.0.0.1]:")  # the second: IPv4 loopback, mapped
    assert all(addr.startswith(loopback) for addr in mine), mine


def test_an_endpoint_spreads_over_both_nodes_and_answers(
    ray_server: LiveServer, endpoint: str
) -> None:
    assert len(actors_of(endpoint)) == 2
    answered = nodes_answering(ray_server, endpoint)
    assert answered == alive_nodes()  # each of the two nodes serves one instance


def test_batch_transform_spreads_files_over_both_nodes(
    ray_server: LiveServer, model_url: str
) -> None:
    sm = ray_server.client("sagemaker")
    s3 = s3_client(ray_server)
    prefix = unique("ray-tj")
    for i in range(6):
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/in/f{i}.csv", Body=b"%d\n" % i)
    model = unique("ray-model")
    sm.create_model(ModelName=model, PrimaryContainer={"ModelDataUrl": model_url})
    req = job_request(
        prefix,
        model,
        f"s3://{BUCKET}/{prefix}/in/",
        f"s3://{BUCKET}/{prefix}/out/",
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 2},
    )
    desc = run_job(sm, req, timeout=120)
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    nodes = set()
    for i in range(6):
        body = s3.get_object(Bucket=BUCKET, Key=f"{prefix}/out/f{i}.csv.out")["Body"].read()
        nodes.add(json.loads(body)["node"])
    assert nodes == alive_nodes()


def test_async_inference_runs_on_a_ray_instance(ray_server: LiveServer) -> None:
    """A local-path model (read at that path on the node: one host) and s3:// input/output."""
    sm, rt = ray_server.client("sagemaker"), ray_server.client("sagemaker-runtime")
    s3 = s3_client(ray_server)
    name = unique("ray-async")
    deploy_async(sm, name, "node", f"s3://{BUCKET}/{name}/out")
    s3.put_object(Bucket=BUCKET, Key=f"{name}/in.csv", Body=b"1\n")
    out = rt.invoke_endpoint_async(EndpointName=name, InputLocation=f"s3://{BUCKET}/{name}/in.csv")
    key = out["OutputLocation"].removeprefix(f"s3://{BUCKET}/")

    def result() -> bytes | None:
        try:
            body: bytes = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None
        return body

    answer = json.loads(wait_for(result, "the async result"))
    assert answer["node"] in alive_nodes()
    sm.delete_endpoint(EndpointName=name)  # its resources go back before the next tests
    wait_gone(sm, name)


def test_a_killed_actor_is_replaced(ray_server: LiveServer, endpoint: str) -> None:
    before = actors_of(endpoint)
    victim = before[0]
    ray.kill(ray.get_actor(victim, namespace=NAMESPACE), no_restart=True)

    def replaced() -> bool:
        now = actors_of(endpoint)
        return len(now) == 2 and victim not in now

    wait_for(replaced, "a replacement actor", server=ray_server)
    wait_for(
        lambda: nodes_answering(ray_server, endpoint) == alive_nodes(),
        "both nodes serving",
        server=ray_server,
    )
    desc = ray_server.client("sagemaker").describe_endpoint(EndpointName=endpoint)
    assert desc["EndpointStatus"] == "InService"


def test_a_request_in_flight_fails_fast_when_its_instance_is_lost(ray_server: LiveServer) -> None:
    sm, rt = ray_server.client("sagemaker"), ray_server.client("sagemaker-runtime")
    name = unique("ray-slow")
    desc = deploy(sm, name, str(FIXTURE_MODELS / "slow"), count=1)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    logs = ray_server.data_dir / "logs" / name

    def started() -> bool:
        return any("slow: sleeping" in p.read_text() for p in logs.rglob("*.log"))

    with ThreadPoolExecutor(1) as pool:
        began = time.monotonic()
        call = pool.submit(rt.invoke_endpoint, EndpointName=name, Body=b"60")
        wait_for(started, "the slow request to start", server=ray_server)
        ray.kill(ray.get_actor(actors_of(name)[0], namespace=NAMESPACE), no_restart=True)
        with pytest.raises(ClientError) as failed:
            call.result(timeout=60)
    assert time.monotonic() - began < 30  # not the 60 s the request would have taken
    error = failed.value.response["Error"]
    assert error["Code"] in {"ModelError", "ModelNotReadyException"}, error
    assert error["Message"]
    # The replacement answers.
    wait_for(
        lambda: rt.invoke_endpoint(EndpointName=name, Body=b"0")["Body"].read() == b"slept 0.0",
        "the replacement",
        server=ray_server,
    )
    sm.delete_endpoint(EndpointName=name)  # its resources go back before the next test
    wait_gone(sm, name)


def test_a_lost_node_is_replaced_on_the_other(
    cluster: Cluster, ray_server: LiveServer, endpoint: str
) -> None:
    worker = cluster.list_all_nodes()[1]  # type: ignore[no-untyped-call]  # [0] is the head, which holds the GCS
    cluster.remove_node(worker, allow_graceful=False)
    survivors = wait_for(lambda: alive_nodes() if len(alive_nodes()) == 1 else None, "node death")
    # Both instances end up on the surviving node, and every call is answered there. (The
    # survivor answers as soon as one instance is replaced: wait for both actors too.)
    wait_for(
        lambda: (
            nodes_answering(ray_server, endpoint) == survivors and len(actors_of(endpoint)) == 2
        ),
        "instances replaced",
        server=ray_server,
    )
    assert len(actors_of(endpoint)) == 2
    for _ in range(10):
        assert invoke(ray_server, endpoint)["node"] in survivors
    desc = ray_server.client("sagemaker").describe_endpoint(EndpointName=endpoint)
    assert desc["EndpointStatus"] == "InService"
