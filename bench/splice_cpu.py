"""Router CPU per request for large bodies (the echo fixture through the router, wrk -t2 -c8),
split into user and system time: the measure for splice.py's threshold.

Run it once with the code to compare on PYTHONPATH and once with the other, back to back; the
CPU per request moves far less with other load on the machine than req/s does.

    PYTHONPATH=src python bench/splice_cpu.py --sizes 200000,524288,1048576,2097152,5242880
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from _harness import REPO, Server, Wrk

ECHO = REPO / "tests" / "fixtures" / "models" / "echo"
ENDPOINT = "splice-cpu"


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of one process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1048576,5242880", help="body sizes in bytes")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with Server() as server:
        server.deploy(ENDPOINT, str(ECHO))
        assert server.process is not None
        pid = server.process.pid
        url = f"{server.url}/endpoints/{ENDPOINT}/invocations"
        for size in (int(s) for s in args.sizes.split(",")):
            wrk = Wrk(os.urandom(size), "application/octet-stream", server.data_dir, f"b{size}")
            wrk.run(url, 1, 8, 1.0)  # warm-up
            for _ in range(args.repeats):
                user0, sys0 = cpu_times(pid)
                result = wrk.run(url, 2, 8, args.duration)
                user1, sys1 = cpu_times(pid)
                if result.errors:
                    raise RuntimeError(f"{size} bytes: {result.errors} wrk errors")
                per = 1e6 / max(result.requests, 1)
                user, system = (user1 - user0) * per, (sys1 - sys0) * per
                print(
                    f"{size:>9} B  {result.rps:>7,.0f} req/s  router CPU/request: user {user:>5.0f}"
                    f" us, sys {system:>5.0f} us, total {user + system:>5.0f} us",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
