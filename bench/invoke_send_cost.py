"""The fast path's per-request cost in InvokePath.send (pick the instance, check the limits,
hand to the pool), in-process with stand-in pools that answer at once: for comparing two
checkouts back to back by CPU instructions, which a busy machine does not blur as it blurs
time.

  perf stat -e instructions:u -x, env PYTHONPATH=<checkout>/src \
      .venv/bin/python bench/invoke_send_cost.py --calls 1000000
  (and --calls 0 for the start-up to subtract; the per-call difference is the cost)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from modelhost.router.invoke import InvokePath
from modelhost.router.routing import RouteTable, VariantRoute
from modelhost.settings import Settings

try:
    from modelhost.router.calls import Call
except ImportError:  # a checkout from before router/calls.py (compared back to back)
    from modelhost.router.invoke import _Call as Call  # type: ignore[attr-defined,no-redef]


class _Pool:
    """What InvokePath.send reads of an UpstreamPool; answers nothing (the cost is the
    router's choice and checks, not the wire)."""

    def __init__(self, name: str) -> None:
        self.instance_id = name
        self.in_flight = 0

    def head_end(self, length: int) -> bytes:
        return b"Content-Length: %d\r\nHost: x\r\n\r\n" % length

    def send(self, head: bytes, body: bytes, timeout: float, on_done: Any, *_: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--instances", type=int, default=2)
    args = parser.parse_args()
    path = InvokePath(RouteTable(), None, Settings(data_dir=Path("/tmp")))  # type: ignore[arg-type]
    pools: Any = [_Pool(f"i-{n}") for n in range(args.instances)]
    variant = VariantRoute("AllTraffic", 1.0, pools)
    call = Call(path, "ep", variant, b"", b"{}", b"rid", 0.0, lambda head, body: None)
    send = path.send
    started = time.perf_counter()
    for _ in range(args.calls):
        send(call, variant)
    took = time.perf_counter() - started
    if args.calls:
        print(f"{took / args.calls * 1e9:.0f} ns per send ({args.calls} calls)")


if __name__ == "__main__":
    main()
