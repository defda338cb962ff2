"""Multi-model endpoints (Mode MultiModel) with real models and instance processes: sklearn and
XGBoost archives under an s3:// prefix of the local store, TargetModel errors, a model added
after the endpoint exists, a BYO server speaking the MMS API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures.framework_models import IRIS_ROWS
from tests.fixtures.multimodel import (
    deploy_mme,
    loaded,
    metric,
    mms_server,
    sklearn_archive,
    xgboost_archive,
)
from tests.fixtures.server import FIXTURE_MODELS, LiveServer, deploy, pack, unique

pytestmark = pytest.mark.e2e

BUCKET = "mme-bucket"


def _invoke(rt: Any, name: str, target: str, body: bytes = b"", csv: bool = False) -> Any:
    if csv:
        body = "\n".join(",".join(map(str, row)) for row in IRIS_ROWS.tolist()).encode()
    body = body or json.dumps(IRIS_ROWS.tolist()).encode()
    out = rt.invoke_endpoint(
        EndpointName=name,
        TargetModel=target,
        Body=body,
        ContentType="text/csv" if csv else "application/json",
        Accept="application/json",
    )
    return json.loads(out["Body"].read())


def _put(archive: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    archive.rename(dest)


def test_sklearn_and_xgboost_under_one_prefix(server: LiveServer, tmp_path: Path) -> None:
    pytest.importorskip("xgboost")
    name = unique("mme")
    prefix_dir = server.data_dir / "objects" / BUCKET / name
    prefix_dir.mkdir(parents=True)
    _put(sklearn_archive(tmp_path / "sk.tar.gz"), prefix_dir / "iris-sk.tar.gz")
    _put(xgboost_archive(tmp_path / "xgb.tar.gz"), prefix_dir / "iris-xgb.tar.gz")
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    desc = deploy_mme(sm, name, f"s3://{BUCKET}/{name}/", count=2)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")

    assert _invoke(rt, name, "iris-sk.tar.gz") == [0, 1, 2]
    scores = _invoke(rt, name, "iris-xgb.tar.gz", csv=True)["predictions"]
    probabilities = np.array([p["score"] for p in scores])
    assert probabilities.shape == (3, 3)
    assert list(probabilities.argmax(axis=1)) == [0, 1, 2]
    assert _invoke(rt, name, "iris-sk.tar.gz") == [0, 1, 2]  # from memory: no second load
    assert metric(server, "modelhost_ModelLoads_total", name) == 2
    assert metric(server, "sagemaker_ModelCacheHit_total", name) == 1
    # Two instances: the second model went to the one with room, each is held once.
    assert sorted(loaded(server, name).values()) == [["iris-sk.tar.gz"], ["iris-xgb.tar.gz"]]

    # A model uploaded under the prefix after the endpoint exists is servable at once.
    _put(sklearn_archive(tmp_path / "late.tar.gz"), prefix_dir / "sub" / "late.tar.gz")
    assert _invoke(rt, name, "sub/late.tar.gz") == [0, 1, 2]
    held = [m for models in loaded(server, name).values() for m in models]
    assert sorted(held) == ["iris-sk.tar.gz", "iris-xgb.tar.gz", "sub/late.tar.gz"]

    with pytest.raises(rt.exceptions.ValidationError) as unknown:
        _invoke(rt, name, "nope.tar.gz")
    message = unknown.value.response["Error"]["Message"]
    assert "Failed to download model data" in message and "nope.tar.gz" in message
    assert unknown.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(rt.exceptions.ValidationError, match="missing a target model header"):
        rt.invoke_endpoint(EndpointName=name, Body=b"[[1, 2, 3, 4]]", ContentType="text/csv")
    with pytest.raises(rt.exceptions.ValidationError, match="relative"):
        _invoke(rt, name, "../escape.tar.gz")


def test_target_model_on_a_single_model_endpoint(server: LiveServer) -> None:
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    name = unique("single")
    assert deploy(sm, name, str(FIXTURE_MODELS / "echo"))["EndpointStatus"] == "InService"
    with pytest.raises(rt.exceptions.ValidationError) as err:
        rt.invoke_endpoint(EndpointName=name, Body=b"x", TargetModel="a.tar.gz")
    assert err.value.response["Error"]["Message"] == (
        f"Endpoint {name} is not a multi-model endpoint and does not support target model header."
    )
    assert rt.invoke_endpoint(EndpointName=name, Body=b"x")["Body"].read() == b"x"


def test_byo_server_with_the_mms_api(server: LiveServer, tmp_path: Path) -> None:
    image = mms_server(tmp_path / "byo")
    prefix = tmp_path / "models"
    for model, weights in (("a", "weights of a"), ("b", "weights of b"), ("c", "weights of c")):
        (tmp_path / model).mkdir()
        (tmp_path / model / "weights.txt").write_text(weights)
        prefix.mkdir(exist_ok=True)
        pack(tmp_path / model, prefix / f"{model}.tar.gz")
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    name = unique("mme-byo")
    # It has room for two models (507 for a third): the platform unloads idle ones and retries.
    desc = deploy_mme(sm, name, str(prefix), image=str(image), environment={"MMS_MAX_MODELS": "2"})
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    for model in ("a", "b", "a"):
        out = _invoke(rt, name, f"{model}.tar.gz", b'{"x": 1}')
        assert out == {
            "weights": f"weights of {model}",
            "target": f"{model}.tar.gz",
            "echo": '{"x": 1}',
        }
    assert metric(server, "modelhost_ModelLoads_total", name) == 2

    # modelhost models ENDPOINT --loaded: per instance, what it holds
    cli = [sys.executable, "-m", "modelhost.cli.main", "models", name, "--loaded"]
    done = subprocess.run(
        [*cli, "--json", "--url", server.url],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    (instance,) = json.loads(done.stdout)
    assert [m["TargetModel"] for m in instance["Models"]] == ["a.tar.gz", "b.tar.gz"]
    assert all(m["Status"] == "Loaded" and m["Bytes"] > 0 for m in instance["Models"])
    table = subprocess.run(
        [*cli, "--url", server.url],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert b"a.tar.gz" in table.stdout and b"s ago" in table.stdout, table.stderr

    # A third model: the server answers 507, so a and b (idle) go and c loads.
    assert _invoke(rt, name, "c.tar.gz", b"{}")["weights"] == "weights of c"
    assert list(loaded(server, name).values()) == [["c.tar.gz"]]
    assert metric(server, "modelhost_ModelUnloads_total", name) == 2
