"""The async queue's store work per request alone, on a SQLite file: the group commit's cycle
as the server runs it under load (each transaction queues --batch new requests, ends the
--batch claimed before, and claims --batch for the slots), without HTTP, objects or the loop.

Prints CPU microseconds per request (this process: it is all there is) and the pages written
to the WAL per request. Run it alternately against two trees (PYTHONPATH picks the code, and so the
schema) to compare them: the steadiest of the async benchmarks (no server, no clients).
Not run in CI:  .venv/bin/python bench/async_queue_cycle.py [--requests 20000 --batch 8]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

from modelhost.asyncinf.records import AsyncRequest, RequestStatus
from modelhost.state.async_queue import AsyncQueue
from modelhost.state.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--done", type=int, default=20000, help="requests ended beforehand")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modelhost-queue-cycle-"))
    store = Store(f"sqlite:///{work / 'state.db'}")
    queue = AsyncQueue(store)
    counter = iter(range(1 << 40))

    def new(n: int) -> list[AsyncRequest]:
        out = []
        for _ in range(n):
            i = next(counter)
            out.append(
                AsyncRequest(
                    request_id=f"{i:032x}",
                    endpoint="bench-async",
                    inference_id=f"m-{i}",
                    input_location=str(work / "input.json"),
                    output_location=f"file://{work}/out/m-{i}.out",
                    failure_location=f"file://{work}/failures/m-{i}-error.out",
                    created=time.time(),
                    expires=time.time() + 21600,
                    timeout_s=900.0,
                    content_type="application/json",
                )
            )
        return out

    def cycle(n: int, held: list[AsyncRequest]) -> list[AsyncRequest]:
        ends = [(r.request_id, RequestStatus.DONE, None) for r in held]
        _, shares = queue.finish_and_claim(
            ends, "me", time.time(), [("bench-async", n)], 60.0, new(n)
        )
        return shares[0]

    held: list[AsyncRequest] = []
    for _ in range(args.done // args.batch):  # a table of ended requests, as a server has
        held = cycle(args.batch, held)
    db = sqlite3.connect(work / "state.db")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL empty: count what is written
    cpu, wall = time.process_time(), time.perf_counter()
    rounds = args.requests // args.batch
    for _ in range(rounds):
        held = cycle(args.batch, held)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    frames = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    db.close()
    store.close()
    print(
        json.dumps(
            {
                "requests": rounds * args.batch,
                "batch": args.batch,
                "cpu_us_per_req": round(cpu * 1e6 / (rounds * args.batch), 2),
                "wall_us_per_req": round(wall * 1e6 / (rounds * args.batch), 2),
                "wal_pages_per_req": round(frames / (rounds * args.batch), 2),
            }
        )
    )


if __name__ == "__main__":
    main()
