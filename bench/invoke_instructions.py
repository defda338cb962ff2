"""InvokePath.dispatch on a cached single-model route with a stub pool that answers at once:
the router's own per-request Python work, for comparing two trees by instruction count
(PYTHONPATH selects the tree). Run under callgrind with N=0 and N=1; the difference of the
two `I refs` totals / 20,000 is the instructions per InvokeEndpoint:

    PYTHONPATH=src valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python bench/invoke_instructions.py 0      # then with 1
"""

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from modelhost.publish import Address, PublishedInstance, PublishedVariant
from modelhost.router.invoke import InvokePath
from modelhost.router.routing import RouteTable
from modelhost.router.upstream_types import UpstreamResponse
from modelhost.settings import Settings

RESP = UpstreamResponse(200, [(b"content-type", b"application/json")], [b'{"x": 1}'])


async def main() -> None:
    routes = RouteTable()
    routes.publish(
        "ep",
        [PublishedVariant("AllTraffic", 1.0, (PublishedInstance("i-1", Address("127.0.0.1", 1)),))],
    )
    pool = routes.get("ep").variants[0].targets[0]

    def send(head, body, timeout, on_done, *_):
        on_done(RESP)

    pool.send = send
    path = InvokePath(routes, None, Settings(data_dir=Path(tempfile.mkdtemp())))
    headers = [
        (b"host", b"x"),
        (b"content-type", b"application/json"),
        (b"accept", b"application/json"),
        (b"content-length", b"19"),
        (b"user-agent", b"wrk"),
        (b"x-amz-date", b"1"),
    ]
    body = b"[[5.1,3.5,1.4,0.2]]"
    n = 0

    def reply(head, payload):
        nonlocal n
        n += 1

    p = b"/endpoints/ep/invocations"
    for _ in range(20000):
        path.dispatch(p, headers, body, reply)
    best = 1e9
    for _ in range(int(sys.argv[1])):
        t = time.perf_counter()
        for _ in range(20000):
            path.dispatch(p, headers, body, reply)
        best = min(best, (time.perf_counter() - t) / 100000 * 1e9)
    print(f"{best:.0f}")


asyncio.run(main())
