"""Batch transform memory: the platform's peak RSS while a large file (default 1 GB) goes
through a transform job, against issue 9's bound of ~4 x MaxPayloadInMB x
MaxConcurrentTransforms (inputs are streamed in and outputs out, never held whole).

Starts `modelhost serve` (temporary data dir, free 127.0.0.1 port, local object store),
writes a --size-mb CSV, runs one job through the echo fixture model (MultiRecord/Line, one
instance) and reads the server's VmRSS before and VmHWM (peak) after from /proc. The model's
instance is a process of its own and is not counted. Prints one JSON object.
Not run in CI:  .venv/bin/python bench/transform_memory.py [--size-mb 1024]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import REPO, Server, machine

ECHO = REPO / "tests" / "fixtures" / "models" / "echo"
JOB_TIMEOUT_S = 3600.0


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def write_input(path: Path, size_mb: int) -> int:
    block = b"".join(b"%08d,0.5,1.5,2.5,3.5\n" % i for i in range(40_000))  # ~1 MB
    written = 0
    with path.open("wb") as f:
        while written < size_mb * 1024 * 1024:
            f.write(block)
            written += len(block)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--payload-mb", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=4, help="MaxConcurrentTransforms")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="transform-memory-") as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        size = write_input(root / "in" / "big.csv", args.size_mb)
        with Server(env={"MODELHOST_EMBEDDED_S3": "false"}) as server:
            assert server.process is not None
            pid = server.process.pid
            server.call(
                "CreateModel",
                {"ModelName": "echo", "PrimaryContainer": {"ModelDataUrl": str(ECHO)}},
            )
            before = status_kib(pid, "VmRSS")
            started = time.perf_counter()
            server.call(
                "CreateTransformJob",
                {
                    "TransformJobName": "memory",
                    "ModelName": "echo",
                    "BatchStrategy": "MultiRecord",
                    "MaxPayloadInMB": args.payload_mb,
                    "MaxConcurrentTransforms": args.concurrency,
                    "TransformInput": {
                        "DataSource": {
                            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"{root}/in/"}
                        },
                        "ContentType": "text/csv",
                        "SplitType": "Line",
                    },
                    "TransformOutput": {"S3OutputPath": f"{root}/out"},
                    "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
                },
            )
            while time.perf_counter() - started < JOB_TIMEOUT_S:
                desc = server.call("DescribeTransformJob", {"TransformJobName": "memory"})
                if desc["TransformJobStatus"] in {"Completed", "Failed", "Stopped"}:
                    break
                time.sleep(0.2)
            wall = time.perf_counter() - started
            peak = status_kib(pid, "VmHWM")
        out_size = (
            (root / "out" / "big.csv.out").stat().st_size
            if desc["TransformJobStatus"] == "Completed"
            else None
        )
    bound_mb = 4 * args.payload_mb * args.concurrency
    growth_mb = (peak - before) / 1024
    print(
        json.dumps(
            {
                "input_mb": round(size / 2**20),
                "output_equal_size": out_size == size,
                "status": desc["TransformJobStatus"],
                "failure_reason": desc.get("FailureReason"),
                "wall_s": round(wall, 2),
                "mb_per_s": round(size / 2**20 / wall, 1),
                "server_rss_before_mb": round(before / 1024, 1),
                "server_peak_rss_mb": round(peak / 1024, 1),
                "peak_growth_mb": round(growth_mb, 1),
                "bound_mb": bound_mb,
                "within_bound": growth_mb <= bound_mb,
                "machine": machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
