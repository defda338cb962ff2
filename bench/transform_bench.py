"""Batch transform throughput: a CSV of --rows rows (default 1,000,000) through the demo sklearn
iris model with MultiRecord/Line, one instance, against the same handler code run in one
process with no HTTP.

Baseline: the demo's inference.py imported here, model_fn once, then for each batch (the same
batches the job sends: records_io.batches, MultiRecord, Line, --payload-mb) input_fn ->
predict_fn -> output_fn, the body passed as str as the toolkit does for CSV.
Job: `modelhost serve` (temporary data dir, free 127.0.0.1 port, local object store),
CreateModel (the sklearn framework image: the built-in server) and CreateTransformJob over
file:// paths, polled every 20 ms until Completed. Job wall time runs from CreateTransformJob
to Completed and so includes the instance's start; the "transform" time is
TransformStartTime -> TransformEndTime as DescribeTransformJob reports it (1 s resolution).

Goal (issue 9): job wall time <= 1.25 x the baseline. Prints one JSON object.
Not run in CI:  .venv/bin/python bench/transform_bench.py [--rows N] [--repeats N]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Server, load_average, machine

from modelhost.demo import build_archive
from modelhost.jobs.records_io import batches

SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
ROWS = (b"5.1,3.5,1.4,0.2\n", b"6.7,3.0,5.2,2.3\n", b"5.9,3.0,4.2,1.5\n")
GOAL_RATIO = 1.25
JOB_TIMEOUT_S = 1800.0


def write_inputs(root: Path, rows: int) -> Path:
    src = root / "in"
    src.mkdir()
    block = b"".join(ROWS[i % 3] for i in range(3000))
    with (src / "iris.csv").open("wb") as f:
        full, rest = divmod(rows, 3000)
        for _ in range(full):
            f.write(block)
        f.write(b"".join(ROWS[i % 3] for i in range(rest)))
    return src / "iris.csv"


def unpack_model(root: Path) -> Path:
    model = root / "model"
    with tarfile.open(fileobj=io.BytesIO(build_archive()), mode="r:gz") as tar:
        tar.extractall(model, filter="data")
    return model


def baseline(model_dir: Path, data: Path, payload_mb: int) -> tuple[float, int]:
    """Seconds for the handler chain over the job's batches in this process; rows out."""
    spec = importlib.util.spec_from_file_location(
        "demo_inference", model_dir / "code" / "inference.py"
    )
    assert spec is not None and spec.loader is not None
    mod: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    started = time.perf_counter()
    model = mod.model_fn(str(model_dir))
    out = 0
    with data.open("rb") as f:
        for batch in batches(f, "Line", True, payload_mb * 1024 * 1024):
            rows = mod.input_fn(batch.body.decode(), "text/csv")
            body, _ = mod.output_fn(mod.predict_fn(rows, model), "text/csv")
            out += body.count("\n")
    return time.perf_counter() - started, out


def run_job(
    server: Server, name: str, model: str, src: Path, out: Path, args: Any
) -> dict[str, Any]:
    started = time.perf_counter()
    server.call(
        "CreateTransformJob",
        {
            "TransformJobName": name,
            "ModelName": model,
            "BatchStrategy": "MultiRecord",
            "MaxPayloadInMB": args.payload_mb,
            "MaxConcurrentTransforms": args.concurrency,
            "TransformInput": {
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"{src}/"}},
                "ContentType": "text/csv",
                "SplitType": "Line",
            },
            "TransformOutput": {
                "S3OutputPath": str(out),
                "Accept": "text/csv",
                "AssembleWith": "Line",
            },
            "TransformResources": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1},
        },
    )
    deadline = started + JOB_TIMEOUT_S
    while time.perf_counter() < deadline:
        desc = server.call("DescribeTransformJob", {"TransformJobName": name})
        if desc["TransformJobStatus"] in {"Completed", "Failed", "Stopped"}:
            wall = time.perf_counter() - started
            if desc["TransformJobStatus"] != "Completed":
                raise RuntimeError(
                    f"job {name}: {desc['TransformJobStatus']}: {desc.get('FailureReason')}"
                )
            lines = sum(block.count(b"\n") for block in _chunks(out / "iris.csv.out"))
            return {
                "wall_s": wall,
                "transform_s": desc["TransformEndTime"] - desc["TransformStartTime"],
                "rows_out": lines,
            }
        time.sleep(0.02)
    raise RuntimeError(f"job {name} did not end within {JOB_TIMEOUT_S:.0f} s")


def _chunks(path: Path) -> Any:
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            yield block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--payload-mb", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=2, help="MaxConcurrentTransforms")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="SAGEMAKER_MODEL_SERVER_WORKERS of the instance (the baseline is one process)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="transform-bench-") as tmp:
        root = Path(tmp)
        data = write_inputs(root, args.rows)
        model_dir = unpack_model(root)
        base = [baseline(model_dir, data, args.payload_mb) for _ in range(args.repeats)]
        assert all(rows == args.rows for _, rows in base), base
        jobs: list[dict[str, Any]] = []
        with Server(env={"MODELHOST_EMBEDDED_S3": "false"}) as server:
            server.call(
                "CreateModel",
                {
                    "ModelName": "bench-iris",
                    "PrimaryContainer": {
                        "Image": SKLEARN_IMAGE,
                        "ModelDataUrl": str(model_dir),
                        "Environment": {"SAGEMAKER_MODEL_SERVER_WORKERS": str(args.workers)},
                    },
                },
            )
            for i in range(args.repeats):
                out = root / f"out-{i}"
                jobs.append(run_job(server, f"bench-{i}", "bench-iris", data.parent, out, args))
                assert jobs[-1]["rows_out"] == args.rows, jobs[-1]
        base_s = statistics.median(t for t, _ in base)
        job_s = statistics.median(j["wall_s"] for j in jobs)
        print(
            json.dumps(
                {
                    "rows": args.rows,
                    "payload_mb": args.payload_mb,
                    "max_concurrent_transforms": args.concurrency,
                    "instance_workers": args.workers,
                    "baseline_s": [round(t, 3) for t, _ in base],
                    "job_wall_s": [round(j["wall_s"], 3) for j in jobs],
                    "job_transform_s": [j["transform_s"] for j in jobs],
                    "rows_per_s_job": round(args.rows / job_s),
                    "rows_per_s_baseline": round(args.rows / base_s),
                    "ratio_job_over_baseline": round(job_s / base_s, 3),
                    "goal_ratio": GOAL_RATIO,
                    "goal_met": job_s / base_s <= GOAL_RATIO,
                    "load_average": load_average(),
                    "machine": machine(),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
