"""The long raw-HTTP fuzz run against a live modelhost server (its front server, the
InvokeEndpoint fast path and the ASGI side): broken request lines, bad chunking, oversized
heads, pipelining past the bound, garbage after a valid request, huge Content-Length without a
body, requests split at random points; every connection half-closed at the end (so that an
incomplete request ends on EOF, not on the 120 s idle sweep). Prints the figures
docs/robustness.md reports.

    .venv/bin/python bench/fuzz_http.py [--conversations 2000] [--seed 14]

The oracle per connection: no 5xx, an answer or a close within the bound (never a hang), a 2xx
for each valid request sent before anything broken, and afterwards the server answers /ping.
Exit status 1 when it found anything.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from tests.e2e.test_http_fuzz import BROKEN, leading_valid, statuses, talk  # noqa: E402
from tests.fixtures import fuzz_oracle as oracle  # noqa: E402

INVOKE = b"/endpoints/fz-endpoint/invocations"
GOOD = (
    b"POST "
    + INVOKE
    + b" HTTP/1.1\r\nHost: h\r\nContent-Type: text/csv\r\nContent-Length: 3\r\n\r\n1,2"
)
GOOD_API = (
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-amz-json-1.1\r\n"
    b"X-Amz-Target: SageMaker.ListModels\r\nContent-Length: 2\r\n\r\n{}"
)


@st.composite
def conversations(draw: st.DrawFn) -> tuple[list[bytes], int]:
    pieces: list[bytes] = []
    for _ in range(draw(st.integers(1, 4))):
        broken = draw(BROKEN).replace(b"/fast", INVOKE)
        pieces.append(draw(st.sampled_from([GOOD, GOOD_API, broken])))
    if draw(st.booleans()):
        pieces.append(draw(st.binary(min_size=1, max_size=64)))
    if draw(st.integers(0, 9)) == 0:
        pieces = [GOOD] * draw(st.integers(17, 40)) + pieces
    data = b"".join(pieces)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    parts = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    return [p for p in parts if p], leading_valid(pieces, (GOOD, GOOD_API))


def run(count: int, seed_value: int) -> int:
    by_status: dict[int, int] = {}
    findings: list[str] = []
    sent = 0
    with tempfile.TemporaryDirectory(prefix="modelhost-httpfuzz-") as tmp:
        live = oracle.seeded_server(Path(tmp))
        address = ("127.0.0.1", live.port)
        started = time.monotonic()

        @seed(seed_value)
        @settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(conv=conversations())
        def one(conv: tuple[list[bytes], int]) -> None:
            nonlocal sent
            parts, valid = conv
            sent += 1
            answer, closed = talk(address, parts, True)
            codes = statuses(answer)
            if len(codes) < valid or not all(200 <= c < 300 for c in codes[:valid]):
                findings.append(f"lost answers ({valid} valid first, got {codes}): "
                                f"{b''.join(parts)[:200]!r}")  # fmt: skip
            for code in codes:
                by_status[code] = by_status.get(code, 0) + 1
            if not closed:
                findings.append(f"hung: {b''.join(parts)[:200]!r}")
            if any(code >= 500 for code in codes):
                findings.append(f"5xx {codes}: {b''.join(parts)[:200]!r}")
            if not oracle.ping(live.port):
                findings.append(f"no /ping after: {b''.join(parts)[:200]!r}")

        try:
            one()
        finally:
            elapsed = time.monotonic() - started
            alive = live.process is not None and live.process.poll() is None
            live.stop()
    answered = sum(by_status.values())
    print(f"connections: {sent} in {elapsed:.0f} s, seed {seed_value}; answers: {answered}")
    print(f"server alive at the end: {alive}")
    print("answers by status:", dict(sorted(by_status.items())))
    print(f"oracle violations: {len(findings)}")
    for line in findings[:50]:
        print("  ", line)
    return 1 if findings or not alive else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    raise SystemExit(run(args.conversations, args.seed))


if __name__ == "__main__":
    main()
