"""Issue 14's measured bug: 16 keep-alive clients on an endpoint with 2 instances, one
instance SIGKILLed. Goal: only the requests in flight on the dead instance may fail (at most
the concurrency); everything queued behind them and every new request goes to the live one.

Starts `modelhost serve`, deploys the echo fixture with 2 instances, runs --clients keep-alive
clients (every answer's body checked), SIGKILLs one instance's process group after
--before seconds, keeps the load --after seconds more, and counts what failed, per run.

  PYTHONPATH=src .venv/bin/python bench/instance_kill.py [--runs 5] [--clients 16]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import REPO, Server
from soak import Load, instances

ECHO = REPO / "tests" / "fixtures" / "models" / "echo"


def one_run(clients: int, before: float, after: float) -> tuple[int, int, list[str], float]:
    """(answered, failed, failure samples, seconds until two instances serve again)."""
    with Server(env={"MODELHOST_RECONCILE_INTERVAL_S": "0.2"}) as server:
        server.call(
            "CreateModel", {"ModelName": "kill", "PrimaryContainer": {"ModelDataUrl": str(ECHO)}}
        )
        variant = {
            "VariantName": "AllTraffic",
            "ModelName": "kill",
            "InstanceType": "ml.m5.large",
            "InitialInstanceCount": 2,
        }
        server.call(
            "CreateEndpointConfig", {"EndpointConfigName": "kill", "ProductionVariants": [variant]}
        )
        server.call("CreateEndpoint", {"EndpointName": "kill", "EndpointConfigName": "kill"})
        server.wait_status("kill", timeout=120, poll=0.05)
        pids = instances(server.data_dir)
        assert len(pids) == 2, pids
        load = Load(server, "kill", clients, (b"ping", "text/plain", b"ping"))
        load.start()
        time.sleep(before)  # steady load before the kill (a benchmark's pacing, not a sync)
        os.killpg(pids[0], signal.SIGKILL)
        killed = time.monotonic()
        healed = float("nan")
        deadline = killed + after
        while time.monotonic() < deadline:
            running = instances(server.data_dir)
            if healed != healed and len(running) == 2 and pids[0] not in running:
                healed = time.monotonic() - killed
            time.sleep(0.05)
        load.stop()
        return load.outcomes["ok"], load.outcomes["failed"], load.samples, healed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--before", type=float, default=3.0)
    parser.add_argument("--after", type=float, default=5.0)
    args = parser.parse_args()
    worst = 0
    for run in range(1, args.runs + 1):
        ok, failed, samples, healed = one_run(args.clients, args.before, args.after)
        worst = max(worst, failed)
        print(
            f"run {run}: {ok:,} answered, {failed} failed (limit {args.clients}), "
            f"a replacement process after {healed:.2f} s  {samples[:3]}",
            flush=True,
        )
    met = worst <= args.clients
    print(f"worst run: {worst} failed; goal <= {args.clients}: {'MET' if met else 'NOT MET'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
