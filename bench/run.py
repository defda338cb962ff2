"""`make bench`: run the benchmarks in sequence and say which failed.

    .venv/bin/python bench/run.py [--duration 10] [--only router_overhead demo_endpoint]

router_overhead.py and demo_endpoint.py need wrk (checked here first). forwarder_bench.py
and runtime_overhead.py run when present. Each script is bounded by a timeout.
Results and how to read them: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _harness import machine, require_wrk  # noqa: E402

TIMEOUT_S = 290  # per script; each is designed to finish well under 5 minutes


def scripts(duration: float) -> dict[str, list[str]]:
    d = f"{duration:g}"
    return {
        "router_overhead": ["router_overhead.py", "--duration", d],
        "demo_endpoint": ["demo_endpoint.py", "--duration", d],
        "forwarder_bench": ["forwarder_bench.py", "--duration", str(min(max(duration, 5), 10))],
        "runtime_overhead": ["runtime_overhead.py"],
    }


def main() -> int:
    all_scripts = scripts(10.0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--only", nargs="+", choices=sorted(all_scripts), help="run only these")
    args = parser.parse_args()
    require_wrk()
    print(" | ".join(f"{k}: {v}" for k, v in machine().items()), flush=True)
    failed = []
    for name, argv in scripts(args.duration).items():
        if args.only and name not in args.only:
            continue
        path = BENCH / argv[0]
        if not path.exists():
            print(f"\n== {name}: {path.name} not present, skipped", flush=True)
            continue
        print(f"\n== {name}", flush=True)
        start = time.monotonic()
        try:
            code = subprocess.run([sys.executable, str(path), *argv[1:]], timeout=TIMEOUT_S)
            rc = code.returncode
        except subprocess.TimeoutExpired:
            print(f"{name}: timed out after {TIMEOUT_S} s", flush=True)
            rc = -1
        print(f"== {name}: exit {rc} after {time.monotonic() - start:.0f} s", flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
